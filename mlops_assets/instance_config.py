"""What the ``dagster.yaml`` files of this project (the clone's
``.mlops/dagster_home/dagster.yaml``, and those ``mlops-demo`` and ``mlops-stack`` write) say
about runs: every run's processes are on this machine, so a run whose processes are all gone
is dead, and the daemon's run monitoring marks it failed (see lib/dead_runs.py). Plain text,
so that writing it imports nothing of Dagster."""

LOCAL_RUNS_YAML = """\
run_launcher:
  module: mlops_assets.lib.dead_runs
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
"""
