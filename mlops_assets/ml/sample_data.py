"""Seeded generator of realistic house-price rows, with a drifted variant.

The distributions follow the public "Housing" price dataset (areas in square
feet, prices in currency units of millions): most houses are on a main road,
a third have air conditioning, semi-furnished is the most common state. The
drifted variant shifts areas up, makes air conditioning and furnishing more
common and inflates prices, so both data drift and a quality drop show.

Rows are generated column-wise with numpy and categoricals are kept as
pandas Categoricals, so 10 million rows fit in well under 2 GB.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FURNISHING = ("furnished", "semi-furnished", "unfurnished")
MAX_ROWS = 10_000_000


def generate_house_prices(rows: int, seed: int = 42, drift: bool = False) -> pd.DataFrame:
    """Generate ``rows`` house-price rows, reproducibly for a given ``seed``.

    Parameters
    ----------
    rows
        Number of rows, from 1 to 10 million.
    seed
        Seed of the random generator; the same seed gives the same rows.
    drift
        Generate the drifted variant (shifted feature distributions and prices).
    """
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 1 and {MAX_ROWS:,}, got {rows:,}")
    rng = np.random.default_rng(seed)
    area_scale = 1.35 if drift else 1.0
    area = np.clip(rng.lognormal(np.log(4600 * area_scale), 0.38, rows), 1000, 40_000).round()
    bedrooms = np.clip(rng.poisson(2.9, rows), 1, 6)
    bathrooms = np.clip(1 + rng.binomial(3, 0.12 + 0.04 * (bedrooms - 1), rows), 1, 4)
    stories = np.clip(1 + rng.binomial(3, 0.27, rows), 1, 4)
    parking = rng.choice(4, rows, p=[0.55, 0.24, 0.19, 0.02])

    def yes_no(p_yes: float) -> np.ndarray:
        return (rng.random(rows) < p_yes).astype(np.int64)

    mainroad = yes_no(0.86)
    guestroom = yes_no(0.18)
    basement = yes_no(0.35)
    hotwaterheating = yes_no(0.05)
    airconditioning = yes_no(0.65 if drift else 0.32)
    prefarea = yes_no(0.45 if drift else 0.23)
    furnishing_p = [0.5, 0.3, 0.2] if drift else [0.26, 0.42, 0.32]
    furnishing = rng.choice(3, rows, p=furnishing_p)

    price = (
        250.0 * area
        + 180_000 * bedrooms
        + 900_000 * (bathrooms - 1)
        + 420_000 * (stories - 1)
        + 280_000 * parking
        + 450_000 * mainroad
        + 300_000 * guestroom
        + 350_000 * basement
        + 850_000 * hotwaterheating
        + 820_000 * airconditioning
        + 620_000 * prefarea
        + np.array([450_000, 220_000, 0])[furnishing]
        + 1_200_000
    )
    price = price * rng.lognormal(0.0, 0.12, rows)
    if drift:
        price = price * 1.25 + 600_000
    price = np.clip(price, 500_000, None).round(-3)

    def categorical(codes: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=list(categories))

    yes_no_categories = ("no", "yes")
    return pd.DataFrame(
        {
            "price": price,
            "area": area.astype(np.int64),
            "bedrooms": bedrooms.astype(np.int64),
            "bathrooms": bathrooms.astype(np.int64),
            "stories": stories.astype(np.int64),
            "mainroad": categorical(mainroad, yes_no_categories),
            "guestroom": categorical(guestroom, yes_no_categories),
            "basement": categorical(basement, yes_no_categories),
            "hotwaterheating": categorical(hotwaterheating, yes_no_categories),
            "airconditioning": categorical(airconditioning, yes_no_categories),
            "parking": parking.astype(np.int64),
            "prefarea": categorical(prefarea, yes_no_categories),
            "furnishingstatus": categorical(furnishing, FURNISHING),
        }
    )


WINE_TARGET = "cultivar"


def wine_rows(rows: int | None = None, seed: int = 42, labels: bool = True) -> pd.DataFrame:
    """The wine recognition table scikit-learn ships (178 wines of three cultivars grown in
    one region of Italy, 13 chemical measurements each): real data for the shipped classifier.

    Without ``rows``: the whole table, as published. With ``rows``: that many of its wines
    drawn at random (with replacement, reproducibly for ``seed``), a day's batch of real rows.
    The column ``od280/od315_of_diluted_wines`` is written ``od280_od315_of_diluted_wines``.
    """
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.rename(columns=lambda c: c.replace("/", "_"))
    frame[WINE_TARGET] = [str(wine.target_names[t]) for t in frame.pop("target")]
    if rows is not None:
        if not 1 <= rows <= MAX_ROWS:
            raise ValueError(f"rows must be between 1 and {MAX_ROWS:,}, got {rows:,}")
        picked = np.random.default_rng(seed).integers(0, len(frame), rows)
        frame = frame.iloc[picked].reset_index(drop=True)
    return frame if labels else frame.drop(columns=[WINE_TARGET])


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlops-sample-data",
        description="Write seeded house-price rows (CSV or Parquet, by the file ending).",
    )
    parser.add_argument("output", type=Path, help="file to write: .csv or .parquet")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--drift", action="store_true", help="write the drifted variant")
    parser.add_argument(
        "--unlabelled", action="store_true", help="leave out the target column (an incoming batch)"
    )
    args = parser.parse_args(argv)
    frame = generate_house_prices(args.rows, seed=args.seed, drift=args.drift)
    if args.unlabelled:
        frame = frame.drop(columns=["price"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".parquet":
        frame.to_parquet(args.output, index=False)
    else:
        args.output.write_bytes(to_csv_bytes(frame))
    print(f"wrote {len(frame):,} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
