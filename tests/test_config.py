"""Config: the shipped YAML files load, errors name the key and the file, overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kws.config import (
    BlockConfig,
    Config,
    apply_options,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    upgrade_layout,
)
from kws.errors import ConfigError
from tests.helpers import CONFIGS


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


# ------------------------------------------------------------------ ranges, checked when the config is built


def nested(dotted: str, value: object) -> dict[str, object]:
    """`{"a": {"b": value}}` for "a.b"; `model.blocks[0].x` puts x into an otherwise valid single block."""
    if dotted.startswith("model.blocks[0]."):
        return {"model": {"blocks": [{"filters": 8, "kernel": 3, dotted.rsplit(".", 1)[1]: value}]}}
    d: dict[str, object] = {}
    *parents, last = dotted.split(".")
    inner = d
    for name in parents:
        inner = inner.setdefault(name, {})  # type: ignore[assignment]
    inner[last] = value
    return d


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("optim.lr", -1.0, "> 0"),
        ("optim.lr", 0, "> 0"),
        ("optim.weight_decay", -0.1, ">= 0"),
        ("optim.eps", 0.0, "> 0"),
        ("optim.betas", [1.0, 0.5], "in [0, 1)"),
        ("optim.betas", [0.9, -0.1], "in [0, 1)"),
        ("trainer.batch_size", 0, ">= 1"),
        ("trainer.epochs", 0, ">= 1"),
        ("trainer.max_steps", 0, ">= 1"),
        ("trainer.log_every_n_steps", 0, ">= 1"),
        ("trainer.val_every_n_steps", 0, ">= 1"),
        ("trainer.seed", -1, ">= 0"),
        ("schedule.warmup_ratio", 1.5, "in [0, 1]"),
        ("schedule.hold_ratio", -0.1, "in [0, 1]"),
        ("schedule.hold_ratio", 0.99, "<= 1 - schedule.warmup_ratio"),
        ("schedule.min_lr", -0.001, ">= 0"),
        ("schedule.min_lr", 0.1, "<= optim.lr (0.05)"),
        ("schedule.power", 0.0, "> 0"),
        ("features.sample_rate", 0, ">= 1"),
        ("features.n_mfcc", 0, ">= 1"),
        ("features.n_mfcc", 80, "<= features.n_mels (64)"),
        ("features.n_mels", 0, ">= 1"),
        ("features.n_fft", 0, ">= 1"),
        ("features.win_length", 0, ">= 1"),
        ("features.win_length", 600, "<= features.n_fft (512)"),
        ("features.hop_length", 0, ">= 1"),
        ("features.n_frames", 0, ">= 1"),
        ("features.f_min", -1.0, ">= 0"),
        ("features.f_min", 9000.0, "< features.sample_rate / 2 (8000)"),
        ("features.f_max", 9000.0, "<= features.sample_rate / 2 (8000)"),
        ("features.f_max", 0.0, "> features.f_min (0)"),
        ("features.vtlp_range", [1.2, 0.9], "low <= high"),
        ("features.vtlp_prob", 1.5, "[0, 1]"),
        ("model.blocks", [], "at least one block"),
        ("model.blocks[0].filters", 0, ">= 1"),
        ("model.blocks[0].repeat", 0, ">= 1"),
        ("model.blocks[0].kernel", 4, "odd"),
        ("model.blocks[0].stride", 0, ">= 1"),
        ("model.blocks[0].dilation", 0, ">= 1"),
        ("model.blocks[0].dropout", 1.0, "in [0, 1)"),
        ("augment.time_shift_ms", -1.0, ">= 0"),
        ("augment.white_noise_db", [-40, -90], "low <= high"),
        ("augment.cutout_rects", -1, ">= 0"),
        ("augment.cutout_freq", -1, ">= 0"),
        ("augment.freq_masks", -1, ">= 0"),
        ("augment.time_width", -1, ">= 0"),
        ("augment.order", ["speed", "speed"], "twice"),
        ("augment.speed.prob", -0.5, "[0, 1]"),
        ("augment.speed.range", [0.0, 1.2], "0 < low"),
        ("augment.gain.db", [6.0, -6.0], "low <= high"),
        ("augment.noise.snr_db", [30.0, 5.0], "low <= high"),
        ("augment.room.rt60_s", [0.9, 0.1], "low <= high"),
        ("augment.room.drr_db", [15.0, 0.0], "low <= high"),
        ("augment.channel.low_hz", [400.0, 50.0], "low <= high"),
        ("augment.channel.high_hz", [3000.0, 9000.0], "Nyquist frequency 8000 Hz"),
        ("augment.channel.peaks", -1, ">= 0"),
        ("augment.channel.peak_db", -8.0, ">= 0"),
    ],
)
def test_out_of_range_values_name_the_key_the_rule_and_the_value(key: str, value: object, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(nested(key, value), "x.yaml")
    message = str(info.value)
    assert message.startswith("x.yaml: `"), message
    assert f"`{key}" in message, message  # `optim.betas[0]` names the item
    assert rule in message, message
    assert "\n" not in message


def test_the_range_error_reads_as_documented(tmp_path: Path) -> None:
    path = write(tmp_path, "optim: {lr: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: `optim.lr` must be > 0, got -1.0"
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["optim.lr=-1"])
    assert str(info.value) == "--set: `optim.lr` must be > 0, got -1.0"


def test_the_recipe_values_and_edge_values_are_accepted() -> None:
    cfg = config_from_dict(
        {
            "trainer": {"max_steps": 1, "val_every_n_steps": 1, "epochs": 1, "batch_size": 1},
            "schedule": {"warmup_ratio": 0.5, "hold_ratio": 0.5, "min_lr": 0.05},
            "features": {"f_max": 8000, "n_mfcc": 64, "n_mels": 64, "win_length": 512},
            "augment": {"time_shift_ms": 0, "white_noise_db": None, "cutout_rects": 0},
        }
    )
    assert cfg.schedule.hold_ratio == 0.5 and cfg.features.f_max == 8000.0
    assert config_from_dict({"optim": {"betas": [0.0, 0.0]}}).optim.betas == (0.0, 0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "--batch-size: `trainer.batch_size` must be >= 1, got 0"),
        ({"epochs": 0}, "--epochs: `trainer.epochs` must be >= 1, got 0"),
        ({"max_steps": 0}, "--max-steps: `trainer.max_steps` must be >= 1 (or null: no limit), got 0"),
        ({"precision": "64"}, "--precision: `trainer.precision` must be one of"),
    ],
)
def test_command_line_options_go_through_the_same_checks(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_options(Config(), **options)
    assert str(info.value).startswith(message)


def test_command_line_options_apply_and_keep_the_rest() -> None:
    cfg = apply_options(
        Config(), train_manifest=Path("t.json"), val_manifests=[Path("v.json")], epochs=3, seed=None
    )
    assert (cfg.data.train_manifest, cfg.data.val_manifests) == ("t.json", ("v.json",))
    assert cfg.trainer.epochs == 3 and cfg.trainer.seed == Config().trainer.seed
    assert cfg.optim == Config().optim


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], "error: --batch-size: `trainer.batch_size` must be >= 1, got 0\n"),
        (["--epochs", "0"], "error: --epochs: `trainer.epochs` must be >= 1, got 0\n"),
        (
            ["--max-steps", "0"],
            "error: --max-steps: `trainer.max_steps` must be >= 1 (or null: no limit), got 0\n",
        ),
        (["--set", "optim.lr=-1"], "error: --set: `optim.lr` must be > 0, got -1.0\n"),
    ],
)
def test_kws_train_refuses_bad_values_before_touching_anything(
    args: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kws import cli

    run_dir = tmp_path / "run"
    # the manifest does not exist: a check that came after reading data would report that instead
    argv = ["kws", "train", "--config", str(CONFIGS / "smoke.yaml"), "--run-dir", str(run_dir)]
    monkeypatch.setattr("sys.argv", [*argv, "--train-manifest", str(tmp_path / "missing.json"), *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == expected
    assert not run_dir.exists()


# ------------------------------------------------------------------ augment sections and the old layout


OLD_ROBUST = """
augment:
  order: [speed, gain, room, noise, channel]
  speed_prob: 0.5
  speed_range: [0.8, 1.25]
  gain_prob: 0.5
  gain_db: [-12.0, 6.0]
  room_prob: 0.2
  room_rt60_s: [0.1, 0.6]
  room_drr_db: [0.0, 15.0]
  noise_prob: 0.3
  noise_snr_db: [5.0, 30.0]
  noise_dir: auto
  channel_prob: 0.3
  channel_low_hz: [50.0, 500.0]
  channel_high_hz: [3000.0, 8000.0]
  channel_peaks: 2
  channel_peak_db: 8.0
"""


def test_old_flat_augment_keys_give_the_same_config_as_the_sections(tmp_path: Path) -> None:
    old = load_config(write(tmp_path, OLD_ROBUST))
    new = load_config(CONFIGS / "matchboxnet_3x1x64_robust.yaml")
    assert old.augment == new.augment
    assert (old.augment.speed.prob, old.augment.noise.dir, old.augment.channel.peaks) == (0.5, "auto", 2)
    # a checkpoint stores config_to_dict of the layout of its day: a flat augment dict reads the same way
    flat = config_to_dict(new)
    flat["augment"] = {
        k: v for k, v in flat["augment"].items() if k not in ("speed", "gain", "noise", "room", "channel")
    }
    flat["augment"].update(yaml.safe_load(OLD_ROBUST)["augment"])
    assert config_from_dict(flat, "best.pt (config)") == new
    assert upgrade_layout(flat) == config_to_dict(new)  # what a run dir's old config.yaml is compared as
    # and old-style overrides still reach the new keys
    cfg = apply_overrides(Config(), ["augment.speed_prob=0.4", "augment.order=[speed]"])
    assert cfg.augment.speed.prob == 0.4
    assert apply_overrides(Config(), ["augment.gain.db=[-3, 3]"]).augment.gain.db == (-3.0, 3.0)


def test_a_setting_spelt_both_ways_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"`augment\.speed_prob` and `augment\.speed\.prob`"):
        config_from_dict({"augment": {"speed_prob": 0.5, "speed": {"prob": 0.4}, "order": ["speed"]}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.speed.rate=2", "unknown key `augment.speed.rate`"),
        ("augment.time_shift_ms.x=2", "`augment.time_shift_ms` is a single setting"),
        ("model.blocks.0.kernel=3", "`model.blocks` is a single setting"),
    ],
)
def test_nested_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override])
    assert message in str(info.value) and str(info.value).startswith("--set: ")


def test_yes_no_on_off_stay_words_in_configs_and_overrides(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads yes/no/on/off as booleans: four Speech Commands labels.
    words = ("no", "off", "on", "yes")
    cfg = apply_overrides(load_config(CONFIGS / "smoke.yaml"), ["data.labels=[no, off, on, yes]"])
    assert cfg.data.labels == words
    path = tmp_path / "labels.yaml"
    path.write_text("data:\n  labels: [no, off, on, yes]\ntrainer:\n  compile: false\n")
    assert load_config(path).data.labels == words and load_config(path).trainer.compile is False


def test_yaml_syntax_errors_are_one_line_with_the_place(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("optim:\n  betas: [0.9, 0.5\ntrainer: {epochs: 2}\n")
    with pytest.raises(
        ConfigError, match=r"broken\.yaml: not valid YAML: .* at line \d+, column \d+$"
    ) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"`optim.betas` as YAML: .* at line 1, column \d+$") as info:
        apply_overrides(load_config(CONFIGS / "smoke.yaml"), ["optim.betas=[0.9"])
    assert "\n" not in str(info.value)


def test_exponents_are_numbers_and_booleans_say_what_to_write(tmp_path: Path) -> None:
    smoke = load_config(CONFIGS / "smoke.yaml")
    assert apply_overrides(smoke, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML 1.1 would read a string
    with pytest.raises(ConfigError, match=r"`data.on_device` must be true or false, got 'yes'"):
        apply_overrides(smoke, ["data.on_device=yes"])
