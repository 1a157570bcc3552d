"""Entry point: ``python -m distrl.train [hydra overrides]`` (console script ``distrl-train``).

``--help`` lists the config groups and every key with its doc (:mod:`distrl.cli_help`; ``--hydra-help``
for Hydra's own). ``--cfg job`` prints the composed config. ``-m`` (Hydra multirun) trains one run per
combination of the swept values, each in its own folder ``runs/multirun/<time>/<n>`` unless
``trainer.output_dir`` is among the swept keys. Otherwise the config is validated before anything
starts (a bad value exits with status 2 and a message naming the field and the fix), then the
job trains: locally on a fresh Ray instance, on the cluster when run by ``ray job submit``, or in this
process with ``cluster.backend=inline``.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from distrl.config import CONF_DIR, ConfigError, register_configs, to_config, validate

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def run(cfg: DictConfig) -> None:
    """Validate the composed config, then train."""
    own_folder(cfg)
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


def own_folder(cfg: DictConfig) -> None:
    """In a multirun, each run trains into the folder Hydra made for it (``hydra.sweep.dir``/``subdir``)
    unless the sweep sets ``trainer.output_dir`` itself; runs would otherwise share one folder."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    if any(o.lstrip("+~").startswith("trainer.output_dir=") for o in hydra_cfg.overrides.task):
        return
    with open_dict(cfg):
        cfg.trainer.output_dir = hydra_cfg.runtime.output_dir


def main() -> None:
    """Console-script entry: ``--help`` / ``-h`` print :func:`distrl.cli_help.help_text`, else Hydra runs."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from distrl.cli_help import help_text

        print(help_text())
        return
    run()


if __name__ == "__main__":
    main()
