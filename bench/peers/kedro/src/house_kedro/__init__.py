"""house-kedro: the house-price lifecycle as a Kedro project (bench/peers/kedro)."""

__version__ = "0.1"
