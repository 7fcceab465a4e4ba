"""Project settings (Kedro's defaults, as `kedro new` writes them). kedro-mlflow's MlflowHook
is auto-registered through its entry point; its configuration is conf/local/mlflow.yml."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
