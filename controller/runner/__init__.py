"""Policy runs: what is due becomes a run in the store with one job per snapshot request,
and a run ends once its jobs have."""

from controller.runner.runner import PolicyRunner, StartedRun, run_state_of

__all__ = ["PolicyRunner", "StartedRun", "run_state_of"]
