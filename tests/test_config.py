"""Config: the shipped YAML files load, errors name the key and the file, overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kws.config import (
    BlockConfig,
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from kws.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path: Path) -> None:
    cfg = load_config(path)
    d = config_to_dict(cfg)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg


def test_recipe_configs_hold_the_recipe_numbers() -> None:
    quartznet = load_config(CONFIGS / "quartznet_3x1_v1.yaml")
    assert quartznet.optim.betas == (0.98, 0.5)
    assert (quartznet.schedule.name, quartznet.schedule.warmup_ratio, quartznet.schedule.min_lr) == (
        "cosine",
        0.05,
        0.001,
    )
    assert (quartznet.trainer.epochs, quartznet.trainer.batch_size) == (100, 128)
    for name in ("matchboxnet_3x1x64_v1", "matchboxnet_3x1x64_v2", "matchboxnet_3x2x64_v2"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay) == (0.05, (0.95, 0.5), 0.001)
        assert (cfg.schedule.name, cfg.schedule.warmup_ratio, cfg.schedule.hold_ratio) == (
            "hold_poly",
            0.05,
            0.45,
        )
        assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (200, 128)
        repeat = 2 if "3x2" in name else 1
        assert [b.repeat for b in cfg.model.blocks] == [1, repeat, repeat, repeat, 1, 1]
    # the defaults are the 3x1x64 recipe too
    assert load_config(CONFIGS / "matchboxnet_3x1x64_v1.yaml").model.blocks == Config().model.blocks


def test_lists_become_tuples_and_blocks_become_dataclasses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "optim: {betas: [0.9, 0.5]}\nmodel:\n  blocks:\n    - {filters: 8}\n"))
    assert cfg.optim.betas == (0.9, 0.5)
    assert cfg.model.blocks == (BlockConfig(filters=8),)
    assert isinstance(cfg.data.val_manifests, tuple)


def test_missing_sections_keep_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "trainer: {epochs: 3}\n")).optim == Config().optim


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("optim: {betaz: [0.9, 0.5]}\n", "optim.betaz"),
        ("optimizer: {lr: 0.1}\n", "optimizer"),
        ("optim: {betas: 0.9}\n", "optim.betas"),
        ("optim: {betas: [0.9, 0.5, 0.1]}\n", "optim.betas"),
        ("optim: {lr: fast}\n", "optim.lr"),
        ("trainer: {epochs: 2.5}\n", "trainer.epochs"),
        ("trainer: {compile: 1}\n", "trainer.compile"),
        ("trainer: {precision: 64}\n", "trainer.precision"),
        ("trainer: {precision: 16.0}\n", "trainer.precision"),
        ("schedule: {name: linear}\n", "schedule.name"),
        ("model: {blocks: [{filters: 8, kernal: 3}]}\n", "model.blocks[0].kernal"),
        ("model: {blocks: [{filters: 8}, {filters: big}]}\n", "model.blocks[1].filters"),
        ("model: {blocks: [{kernel: 3}]}\n", "model.blocks[0]"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"`{key}" in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides_are_typed_by_the_field() -> None:
    cfg = apply_overrides(
        Config(),
        [
            "trainer.epochs=3",
            "optim.lr=1",
            "optim.betas=[0.98, 0.5]",
            "trainer.max_steps=none",
            "trainer.precision=bf16",
            "trainer.compile=true",
            "features.f_max=8000",
            "data.val_manifests=[a.json, b.json]",
            "augment.white_noise_db=null",
            "features.normalize=per_utterance",
        ],
    )
    assert cfg.trainer.epochs == 3 and isinstance(cfg.trainer.epochs, int)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.98, 0.5)
    assert cfg.trainer.max_steps is None
    assert cfg.trainer.precision == "bf16" and cfg.trainer.compile is True
    assert cfg.features.f_max == 8000.0 and isinstance(cfg.features.f_max, float)
    assert cfg.data.val_manifests == ("a.json", "b.json")
    assert cfg.augment.white_noise_db is None
    assert cfg.features.normalize == "per_utterance"
    assert apply_overrides(cfg, ["trainer.max_steps=10"]).trainer.max_steps == 10


def test_integers_are_read_as_strings_where_the_schema_wants_one(tmp_path: Path) -> None:
    # `precision: 16` and `--set trainer.precision=16` are what users type; YAML reads 16 as an int.
    assert load_config(write(tmp_path, "trainer: {precision: 16}\n")).trainer.precision == "16"
    assert apply_overrides(Config(), ["trainer.precision=32"]).trainer.precision == "32"
    assert apply_overrides(Config(), ['trainer.precision="16"']).trainer.precision == "16"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=abc", "`trainer.epochs`"),
        ("trainer.epochs", "section.key=value"),
        ("epochs=3", "section.key=value"),
        ("trainer.epoch=3", "`trainer.epoch`"),
        ("train.epochs=3", "`train`"),
        ("optim.betas=[0.9", "optim.betas"),
    ],
)
def test_bad_overrides_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_with(override)
    assert message in str(info.value)
    assert "--set" in str(info.value)


def load_config_with(override: str) -> Config:
    return apply_overrides(Config(), [override])


def test_load_config_applies_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "trainer: {epochs: 3}\n"), ["trainer.epochs=4", "optim.lr=0.1"])
    assert (cfg.trainer.epochs, cfg.optim.lr) == (4, 0.1)
