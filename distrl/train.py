"""Entry point: ``python -m distrl.train [hydra overrides]`` (console script ``distrl-train``).

``--cfg job`` prints the composed config. Otherwise the config is validated before anything
starts; a bad value exits with status 2 and a message naming the field and the fix.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from distrl.config import ConfigError, register_configs, to_config, validate

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run(cfg: DictConfig) -> None:
    """Validate the composed config, then run the job it describes."""
    try:
        config = to_config(cfg)
        validate(config)
    except ConfigError as err:
        print(f"distrl: config error: {err}", file=sys.stderr)
        sys.exit(2)
    print(OmegaConf.to_yaml(cfg))
    print("distrl: the config is valid; the distributed runtime that trains it is not built yet.")


def main() -> None:
    """Console-script entry."""
    run()


if __name__ == "__main__":
    main()
