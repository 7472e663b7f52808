"""The project's own errors. Adapters turn library errors into these (``raise ... from exc``).

Two kinds matter to an operator: the configuration is wrong (fix the repo or the targets
file; retrying will not help), or the system failed (a registry, the engine, the disk;
a later attempt may succeed).
"""


class DeployError(Exception):
    """A deployment step failed; the message is for people and never holds a secret."""


class OperatorError(DeployError):
    """The operator's configuration is wrong: the compose file, the targets file, a ref."""


class InfrastructureError(DeployError):
    """The system failed: Git remote, registry, Docker engine, disk."""


class StepTimeout(InfrastructureError):
    """A step ran past its deadline; its child processes were ended."""


class LeaseLost(DeployError):
    """Another worker took over this target (our lease expired); stop at once."""
