"""The served model's application: the process inside the image that ``served_image`` builds.

The image copies this package as it is (``/opt/mlops/model_server``) and starts it with
``python -m model_server``. It imports nothing else of ``mlops_assets`` (a lint rule and a test
hold that): only the standard library and what the image installs beside MLflow (FastAPI,
uvicorn, prometheus_client, fastapi-swagger's Swagger UI files; boto3 for a traffic log in S3).

- :mod:`.settings`: what the environment sets (protocol, batching, body limit, traffic log).
- :mod:`.sizing`: one uvicorn worker per CPU the container may use, native threads shared out.
- :mod:`.app`: the FastAPI app of a worker. MLflow's own scoring function answers, so an answer
  is MLflow's, byte for byte; each worker predicts on one thread, in order of arrival.
  ``/docs`` and ``/openapi.json`` describe the model's own columns (:mod:`.openapi`).
- :mod:`.batching`: the rows of requests that arrive while the model is busy predicted together,
  in one call, when the model answers each row alone whatever rows come with it (a tree model,
  the default) or when ``MLOPS_SERVING_BATCH`` says so.
- :mod:`.limits`: what a request may be. A body over ``MLOPS_SERVING_MAX_BODY_BYTES`` is
  answered 413 as soon as its Content-Length or the bytes read so far say so, never held whole;
  JSON nested deeper than 32 levels is answered 400 unparsed; a ``dataframe_split`` row with more
  or fewer values than columns, and a row whose values are all null, are answered 400 naming the
  rows. Columns the signature does not have are named in an ``x-ignored-columns`` header, a
  warning (once a minute at most) and the traffic log's lines.
- :mod:`.v2`: the Open Inference Protocol (KServe's V2): a request's input tensors are the
  table's columns, scored by the same function (as ``dataframe_split``), and the answer's
  columns come back as output tensors.
- :mod:`.record`: the traffic log's record, one schema for the writer here and the reader
  (``mlops_assets.ml.traffic``).
- :mod:`.traffic_log`: every request answered is appended to its worker's journal on local disk
  before the client has the answer; a background thread writes the journal to the object store
  as JSON Lines files (``traffic/<model>/date=<day>/...jsonl``); what a killed worker left, the
  worker started in its place ships. A full journal drops records and counts them.
- :mod:`.metrics`: Prometheus metrics (``/metrics``), summed over the workers.
"""
