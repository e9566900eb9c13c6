"""Config: YAML to typed dataclasses, overrides, inheritance, and errors that name the key and the fix."""
import pytest
import yaml

from vit_ms.config import Config, config_to_dict, upgrade_recorded_config
from vit_ms.config_loader import config_from_dict, load_config, resolve_config_path, save_config
from vit_ms.errors import ConfigError


def write(tmp_path, name, values):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def test_every_shipped_config_loads():
    for name in ["demo", "vit_ti16", "vit_s16", "vit_b16", "vit_b32", "vit_l16", "vit_b16_finetune"]:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        assert cfg.run_name == name


def test_variant_configs_inherit_the_deit_recipe():
    b16, s16 = load_config("vit_b16.yaml"), load_config("configs/vit_s16.yaml")
    assert s16.model.name == "vit_s16"
    assert (s16.optim.lr, s16.data.mixup, s16.data.cutmix, s16.data.re_prob) == (5e-4, 0.8, 1.0, 0.25)
    assert s16.train.epochs == b16.train.epochs == 300


def test_types_and_overrides(tmp_path):
    path = write(tmp_path, "run.yaml", {"train": {"epochs": 3}, "optim": {"lr": 1}})
    cfg = load_config(str(path), ["train.epochs=5", "data.root=/data/x", "optim.betas=[0.9, 0.95]",
                                  "distributed=true"])
    assert cfg.train.epochs == 5 and cfg.data.root == "/data/x"
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # int accepted for a float key
    assert cfg.optim.betas == [0.9, 0.95]
    assert cfg.distributed is True
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert load_config(None, ["train.sink_mode=on"]).train.sink_mode == "on"  # ... and on/off as booleans
    assert load_config(None, ["model.attention=standard"]).model.attention == "standard"
    assert cfg.run_name == "run"


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "bad.yaml", {"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer'; did you mean 'optim'"):
        load_config(None, ["optimizer.lr=1"])


@pytest.mark.parametrize("override, message", [
    ("optim.nesterov=true", r"optim.nesterov=true applies to optim.name=sgd only, but the optimizer is adamw"),
    ("train.epochs=abc", r"'train.epochs' must be int, got 'abc'"),
    ("train.epochs=2.5", r"'train.epochs' must be int"),
    ("amp.level=O4", r"'amp.level' must be 'auto' or 'O0'"),
    ("optim.lr=-0.1", r"optim.lr=-0.1 must be positive"),
    ("model.image_size=225", r"model.image_size=225 is not divisible by model.patch_size=16; use a multiple such as 224"),
    ("model.name=vit_b61", r"unknown model 'vit_b61'; did you mean 'vit_b16'"),
    ("loss.label_smoothing=1.5", r"loss.label_smoothing=1.5 must be in \[0, 1\)"),
    ("train.epochs", r"must look like section.key=value"),
    ("data.generate=mnist", r"'data.generate' must be '' or 'digits', got 'mnist'"),
    ("train.divergence_factor=0.5", r"train.divergence_factor=0.5 must be > 1 \(e.g. 1e4\), or 0 to stop only"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("vit_b16", [override])


def test_bare_name_resolves_in_configs_and_missing_file_lists_choices():
    assert resolve_config_path("vit_b16.yaml").name == "vit_b16.yaml"
    assert resolve_config_path("vit_b16").parent.name == "configs"
    with pytest.raises(ConfigError, match=r"config file 'vit_b61.yaml' not found.*did you mean 'vit_b16.yaml'"):
        load_config("vit_b61.yaml")


def test_base_inheritance_and_cycles(tmp_path):
    write(tmp_path, "parent.yaml", {"train": {"epochs": 7, "batch_size": 4}})
    child = write(tmp_path, "child.yaml", {"base": "parent.yaml", "train": {"epochs": 2}})
    cfg = load_config(str(child))
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 4)
    loop = write(tmp_path, "loop.yaml", {"base": "loop.yaml"})
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(str(loop))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("demo", ["train.epochs=4"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(str(tmp_path / "config.yaml"))
    assert again == cfg


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


def test_recipe_configs_say_what_their_papers_do():
    deit, augreg, mae = load_config("vit_b16"), load_config("vit_b16_ft_augreg"), load_config("vit_b16_ft_mae")
    assert (deit.data.aug_repeats, deit.train.ema, deit.train.ema_decay, deit.train.global_batch_size) == \
        (3, True, 0.99996, 1024)
    o = augreg.optim
    assert (o.name, o.momentum, o.weight_decay, o.clip_grad_norm, o.lr, augreg.train.global_batch_size) == \
        ("sgd", 0.9, 0.0, 1.0, 0.01, 512)
    assert (augreg.data.mixup, augreg.data.aug_repeats, augreg.model.pretrained) == (0.0, 1, "vit_b16.augreg_in21k")
    m = mae.model
    assert (m.global_pool, m.fc_norm, m.drop_path_rate, mae.optim.layer_decay, mae.optim.name) == \
        ("avg", True, 0.1, 0.65, "adamw")
    finetune = load_config("vit_b16_finetune")
    assert (finetune.train.ema, finetune.data.aug_repeats, finetune.train.global_batch_size) == (False, 1, 0)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=[1,", r"is not plain YAML \(expected the node content"),
    ("data.root=!!python/object/apply:os.system [ls]", "could not determine a constructor for the tag"),
    ("train.epochs=!custom 3", "tags such as !!python/... are never read"),
])
def test_overrides_that_are_not_plain_yaml_are_one_paragraph_errors(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [override])
    assert f"override '{override}'" in str(err.value)


def test_text_keys_take_the_override_as_written(tmp_path):
    cfg = load_config(None, ["data.index_cache_dir=off", "data.root=/data/2024: raw", "output_dir=1e3"])
    assert (cfg.data.index_cache_dir, cfg.data.root, cfg.output_dir) == ("off", "/data/2024: raw", "1e3")
    assert load_config(None, ["data.root='quoted'"]).data.root == "quoted"
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  index_cache_dir: off\n")  # in a file YAML reads it as false: say to quote it
    with pytest.raises(ConfigError, match=r"'data.index_cache_dir' must be text.*quote it, e.g. index_cache_dir: 'off'"):
        load_config(str(path))


def test_deit_distilled_config_is_the_papers_hard_distillation_on_the_deit_recipe():
    cfg, base = load_config("deit_b16_distilled.yaml"), load_config("vit_b16.yaml")
    k = cfg.distill
    assert (cfg.model.distilled, k.type, k.alpha, k.tau, k.teacher) == (True, "hard", 0.5, 1.0, "mindcv:regnet_y_16gf")
    assert k.teacher_weights.endswith("regnet_y_16gf-c30a856f.ckpt")
    assert (cfg.optim, cfg.data, cfg.train) == (base.optim, base.data, base.train)
    assert base.distill.type == "none" and not base.model.distilled


def test_old_key_names_in_a_users_config_are_refused_naming_todays(tmp_path):
    with pytest.raises(ConfigError, match="'model.fused_attention' is now 'model.attention' .*on -> fused"):
        load_config("demo", ["model.fused_attention=on"])
    path = tmp_path / "old.yaml"
    path.write_text("amp:\n  half_norms: off\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'amp.half_norms' is now 'amp.norms'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="'model.in_channels' was removed: every model takes RGB"):
        load_config(None, ["model.in_channels=3"])


def test_a_recorded_config_with_old_names_is_upgraded_once_where_checkpoints_are_read():
    recorded = config_to_dict(Config())
    recorded["model"] = {**recorded["model"], "in_channels": 3, "fused_attention": "off"}
    del recorded["model"]["attention"]
    recorded["amp"] = {**recorded["amp"], "half_norms": True}
    del recorded["amp"]["norms"]
    recorded["data"] = {**recorded["data"], "reader": "native"}  # every checkpoint of the two-reader versions
    upgraded = upgrade_recorded_config(recorded)
    assert "reader" not in upgraded["data"]
    assert "in_channels" not in upgraded["model"] and "in_channels" in recorded["model"]  # a copy
    cfg = config_from_dict(recorded, recorded=True)
    assert (cfg.model.attention, cfg.amp.norms) == ("standard", "half")
    with pytest.raises(ConfigError, match="unknown config key 'model.in_channels'"):
        config_from_dict(recorded)  # a user's dict is not upgraded
    grey = {**recorded, "model": {**recorded["model"], "in_channels": 1}}
    with pytest.raises(ConfigError, match="model.in_channels=1, which this version cannot build"):
        config_from_dict(grey, recorded=True)


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=.nan", "optim.weight_decay=-.inf",
                                      "data.mean=[1.0, .inf, 2.0]", "model.mlp_ratio=.inf", "distill.tau=.inf"])
def test_every_float_key_must_be_finite(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config key '{key}(\[1\])?' is -?(inf|nan), which no run can mean"):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("checkpoint.interval_epochs=0", "checkpoint.interval_epochs=0 must be >= 1"),
    ("eval.interval_epochs=0", "eval.interval_epochs=0 must be >= 1"),
    ("train.log_interval=0", "train.log_interval=0 must be >= 1"),
    ("train.seed=-1", r"train.seed=-1 must be in \[0, 2\^32\)"),
    ("amp.scale_window=0", "amp.scale_window=0 must be >= 1"),
    ("amp.loss_scale_value=0.5", "amp.loss_scale_value=0.5 must be >= 1"),
    ("optim.eps=0", "optim.eps=0.0 must be positive"),
])
def test_integers_and_floats_out_of_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_key_written_twice_is_refused_with_both_lines_in_every_file_of_a_base_chain(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 1\n  batch_size: 8\n  epochs: 7\n", encoding="utf-8")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\noptim:\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"'{base}' sets 'epochs' twice in one mapping, at lines 2 and 4"):
        load_config(str(child))
    base.write_text("train:\n  epochs: 1\n", encoding="utf-8")
    child.write_text("base: base.yaml\noptim: {lr: 0.1}\noptim:\n  lr: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"'{child}' sets 'optim' twice in one mapping, at lines 2 and 3"):
        load_config(str(child))
    child.write_text("base: base.yaml\nx: &a {lr: 0.1}\n", encoding="utf-8")  # anchors still read
    with pytest.raises(ConfigError, match="unknown config key 'x'"):
        load_config(str(child))


@pytest.mark.parametrize("key", ["patch_embed", "backward", "bias_grad"])
def test_layer_implementations_are_the_benchmarks_not_the_configs(key):
    with pytest.raises(ConfigError, match=rf"'model.{key}' was removed: .*--formulation {key}=\.\.\., so delete"):
        load_config(None, [f"model.{key}=auto"])
    recorded = config_to_dict(Config())
    recorded["model"] = {**recorded["model"], key: "auto"}
    assert config_from_dict(recorded, recorded=True) == Config()  # a checkpoint that recorded one still loads
