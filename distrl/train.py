"""Entry point: ``python -m distrl.train [hydra overrides]`` (console script ``distrl-train``).

``--cfg job`` prints the composed config. Otherwise the config is validated before anything
starts (a bad value exits with status 2 and a message naming the field and the fix), then the
job trains: locally on a fresh Ray instance, on the cluster when run by ``ray job submit``, or in this
process with ``cluster.backend=inline``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from distrl.config import CONF_DIR, ConfigError, register_configs, to_config, validate

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def run(cfg: DictConfig) -> None:
    """Validate the composed config, then train."""
    try:
        config = to_config(cfg)
        validate(config)
    except ConfigError as err:
        print(f"distrl: config error: {err}", file=sys.stderr)
        sys.exit(2)
    from distrl.checkpoint import CheckpointError, OutputDirError
    from distrl.trainer import Trainer, TrainingError

    trainer = None
    try:
        trainer = Trainer(config)
        trainer.fit()
    except ConfigError as err:  # found by the cheap checks that read the data and the model's config
        print(f"distrl: config error: {err}", file=sys.stderr)
        sys.exit(2)
    except (TrainingError, FileNotFoundError, ValueError, OutputDirError, CheckpointError) as err:
        print(f"distrl: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        if trainer is not None:
            trainer.shutdown()


def main() -> None:
    """Console-script entry."""
    run()


if __name__ == "__main__":
    main()
