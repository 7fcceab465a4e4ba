"""How assets and checks that talk to servers ride out transient faults."""

from dagster import Backoff, Jitter, RetryPolicy

# Three more attempts after about 2, 4 and 8 seconds. Clients retry single requests
# themselves (boto3 standard mode); this covers a server that is down for a few seconds.
# Bad input raises Failure(allow_retries=False), so it fails at once.
SERVER_RETRY = RetryPolicy(
    max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
