"""Config layering and its errors: defaults < dataset file < user file < flags; typos never pass."""

import pytest
import yaml

from zscrgan.config import CONFIG_DIR, DEFAULT_FILE, load_config, parse_flag_value, read_yaml
from zscrgan.errors import UserError

RELEASED = {"batch_size": 32, "gf_dim": 2048, "df_dim": 1024, "embed_dim": 1024, "CSEM_lr": 0.002,
            "generator_lr": 0.0002, "discriminator_lr": 0.0002, "kl_div_coefficient": 1.0,
            "mm_reg_coeff": 2.0, "z_dim": 256, "clip_val": 0.01}
DATASETS = ("AWA1", "AWA2", "CUB", "FLO", "NAB_SCS", "NAB_SCE", "WIKI", "DEMO")


def test_default_holds_every_released_hyperparameter_with_its_value():
    cfg = load_config("CUB")
    for key, value in RELEASED.items():
        assert cfg[key] == value, key
    assert (cfg.e_step_iters, cfg.critic_steps, cfg.m_step_iters, cfg.top_k) == (100, 5, 100, 50)
    assert cfg.dataset == "CUB"


def test_switches_default_to_released_behaviour():
    cfg = load_config("CUB")
    assert cfg.input_scaling == "none" and cfg.protocol == "released" and cfg.r_hinge is False
    assert cfg.divergence == "released" and cfg.triplet == "batch_mean" and cfg.pad_short_batches is True
    assert cfg.wrong_class == "shift" and cfg.eval_draws == 1 and cfg.adv_coeff == 1 and cfg.triplet_coeff == 1


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_files_exist_and_override_only_known_keys(name):
    path = CONFIG_DIR / f"{name}.yaml"
    assert path.exists()
    data = read_yaml(path)
    defaults = read_yaml(DEFAULT_FILE)
    assert set(data) <= set(defaults)
    for key, value in data.items():
        assert value != defaults[key], f"{name}.yaml repeats the default of {key}"
    load_config(name)  # resolves without error


def test_layering_order(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("rounds: 7\nmm_reg_coeff: 0.5\n")
    cfg = load_config("DEMO", user, {"mm_reg_coeff": 1.0})
    assert cfg.rounds == 7  # user file over DEMO.yaml's value
    assert cfg.mm_reg_coeff == 1.0  # flag over user file
    assert cfg.gf_dim == read_yaml(CONFIG_DIR / "DEMO.yaml")["gf_dim"]  # dataset file over default


def test_int_is_accepted_for_a_float_key_and_flag_values_parse_as_yaml():
    cfg = load_config("CUB", overrides={"mm_reg_coeff": parse_flag_value("1")})
    assert cfg.mm_reg_coeff == 1.0 and isinstance(cfg.mm_reg_coeff, float)
    assert parse_flag_value("true") is True and parse_flag_value("kl") == "kl"


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("1E-3", 1e-3), (".5", 0.5), ("-.5", -0.5), ("-2e5", -2e5), ("+1e3", 1e3), ("1.5E+3", 1500.0),
    ("1_000.5", 1000.5), ("1.", 1.0), ("1.0e-3", 1e-3)])
def test_numbers_as_yaml_1_2_and_python_write_them_are_floats(text, value):
    assert parse_flag_value(text) == value and type(parse_flag_value(text)) is float


def test_ints_stay_ints_and_strings_stay_strings():
    assert parse_flag_value("1_000") == 1000 and type(parse_flag_value("1_000")) is int
    for text in ("1e", "e5", "1e-3x", "1.2.3", "cfg1e3", "inf", "kl"):
        assert parse_flag_value(text) == text


def test_numbers_in_any_form_in_a_config_file(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("CSEM_lr: 1e-3\ngenerator_lr: 2E-4\nmm_reg_coeff: .5\nrounds: 1_000\nclip_val: 1\n")
    cfg = load_config("DEMO", user)
    assert (cfg.CSEM_lr, cfg.generator_lr, cfg.mm_reg_coeff, cfg.rounds, cfg.clip_val) == (1e-3, 2e-4, 0.5, 1000, 1.0)
    assert type(cfg.clip_val) is float  # an int-looking value for a float key
    user.write_text("protocol: 1e3\n")  # a string key given a number is still refused
    with pytest.raises(UserError, match="'protocol' must be str"):
        load_config("DEMO", user)
    user.write_text("rounds: 1e3\n")  # an int key given a float too
    with pytest.raises(UserError, match="'rounds' must be int"):
        load_config("DEMO", user)


@pytest.mark.parametrize("override, words", [
    ({"mm_reg_coef": 1.0}, ["unknown config key 'mm_reg_coef'", "mm_reg_coeff"]),
    ({"batch_size": 3.5}, ["'batch_size'", "int"]),
    ({"batch_size": "32"}, ["'batch_size'", "int"]),
    ({"r_hinge": 1}, ["'r_hinge'", "bool"]),
    ({"rounds": True}, ["'rounds'", "int"]),
    ({"protocol": "honest"}, ["'protocol'", "released, validated"]),
    ({"batch_size": 0}, ["'batch_size'", "> 0"]),
    ({"clip_val": -0.1}, ["'clip_val'", ">= 0"]),
    ({"demo": {"n_classs": 3}}, ["unknown config key 'demo.n_classs'"]),
    ({"demo": 3}, ["'demo' must be a mapping"]),
    ({"val_fraction": 1.0}, ["val_fraction"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(UserError) as e:
        load_config("CUB", overrides=override)
    for w in words:
        assert w in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_user_files_name_the_file(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("kl_div_coeficient: 2.0\n")
    with pytest.raises(UserError, match=r"typo\.yaml: unknown config key 'kl_div_coeficient'"):
        load_config("CUB", typo)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rounds: [1,\n")
    with pytest.raises(UserError, match=r"broken\.yaml: not valid YAML"):
        load_config("CUB", broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- rounds\n")
    with pytest.raises(UserError, match=r"list\.yaml: a config file must be a mapping"):
        load_config("CUB", listing)
    with pytest.raises(UserError, match=r"missing\.yaml: config file not found"):
        load_config("CUB", tmp_path / "missing.yaml")


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("rounds: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("CUB", evil)


def test_saved_config_replaces_dataset_layers(tmp_path):
    saved = tmp_path / "config.yaml"
    cfg = dict(load_config("DEMO"))
    cfg["rounds"] = 3
    saved.write_text(yaml.safe_dump({k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}))
    again = load_config("DEMO", saved=saved, overrides={"rounds": 5})
    assert again.rounds == 5 and again.gf_dim == cfg["gf_dim"]


def test_cub_sized_demo_config_matches_the_generator_preset():
    from dataclasses import asdict

    from zscrgan.data.demo import CUB_LIKE

    cfg = load_config("DEMO", CONFIG_DIR / "demo_cub_sizes.yaml")
    assert dict(cfg.demo) == asdict(CUB_LIKE)
    assert (cfg.gf_dim, cfg.df_dim, cfg.embed_dim, cfg.z_dim) == (2048, 1024, 1024, 256)  # released sizes
