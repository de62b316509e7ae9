import json

import pytest

from pgolf.core.config import Config, ConfigError, apply_overrides, env_overrides, from_env
from pgolf.running.presets import PRESETS, get_preset


def test_defaults_are_the_official_baseline():
    c = Config()
    m, t, o, s = c.model, c.train, c.optim, c.schedule
    assert (m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp, m.mlp_mult) == (9, 512, 8, 4, "relu2", 2.0)
    assert (m.vocab_size, t.train_seq_len, m.tie_embeddings, t.train_batch_tokens) == (1024, 1024, True, 524_288)
    assert (o.matrix_lr, o.muon_momentum, o.muon_momentum_warmup_start, o.muon_momentum_warmup_steps) == (0.04, 0.95, 0.85, 500)
    assert (o.tied_embed_lr, o.scalar_lr, s.warmdown_iters, t.warmup_steps) == (0.05, 0.04, 1200, 20)
    assert (t.max_wallclock_seconds, m.logit_softcap, m.qk_gain_init, m.rope_base) == (600.0, 30.0, 1.5, 10000.0)
    # every technique is off by default
    assert (m.smear_gate, m.bigram_buckets, c.qat.enabled, c.averaging.mode, c.eval.stride) == ("off", 0, False, "none", 0)
    assert (c.export.bits_attn, c.export.bits_mlp, c.export.compressor, c.export.prune_frac) == (8, 8, "zlib", 0.0)


def test_dotted_overrides_and_json_round_trip(tmp_path):
    c = apply_overrides(Config(), ["model.num_layers=11", "optim.matrix_lr=0.02", "model.mlp=swiglu", "qat.enabled=true"])
    assert (c.model.num_layers, c.optim.matrix_lr, c.model.mlp, c.qat.enabled) == (11, 0.02, "swiglu", True)
    p = tmp_path / "c.json"
    p.write_text(c.to_json())
    assert Config.from_json(p) == c


@pytest.mark.parametrize("override, needle", [
    ("model.num_layerz=3", "unknown key 'num_layerz'"),
    ("modle.num_layers=3", "section one of"),
    ("model.num_layers=three", "expected an integer"),
    ("model.mlp=gelu", "expected one of ['relu2', 'swiglu', 'leaky_relu2']"),
    ("export.bits_mlp=3", "expected one of (4, 5, 6, 7, 8)"),  # 7 is valid since PR #1855's int7
    ("model.num_heads=7", "must divide model_dim"),
    ("qat.enabled=maybe", "expected a boolean"),
    ("novalue", "expected section.key=value"),
])
def test_bad_overrides_name_key_and_expectation(override, needle):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [override])
    assert needle in str(e.value)


def test_unknown_key_in_json_is_an_error(tmp_path):
    d = Config().to_dict()
    d["train"]["iterationz"] = 5
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"bad.json.*unknown key\(s\) \['iterationz'\]"):
        Config.from_json(p)


def test_official_environment_names():
    env = {"NUM_LAYERS": "11", "MODEL_DIM": "512", "MLP_MULT": "3", "MATRIX_LR": "0.02", "WARMDOWN_ITERS": "3000",
           "TRAIN_SEQ_LEN": "2048", "SEED": "42", "MAX_WALLCLOCK_SECONDS": "600", "TIE_EMBEDDINGS": "1",
           "USE_SWIGLU": "1", "QAT_FRACTION": "0.15", "EVAL_STRIDE": "64", "UNRELATED": "x"}
    c = from_env(Config(), env)
    assert (c.model.num_layers, c.model.mlp_mult, c.optim.matrix_lr, c.schedule.warmdown_iters) == (11, 3.0, 0.02, 3000)
    assert (c.train.train_seq_len, c.train.seed, c.model.mlp, c.eval.stride) == (2048, 42, "swiglu", 64)
    assert c.qat.enabled and c.qat.start_frac == pytest.approx(0.85)
    assert env_overrides({}) == {}
    with pytest.raises(ConfigError, match="model.num_layers"):
        from_env(Config(), {"NUM_LAYERS": "many"})


def test_every_preset_builds_and_validates():
    for name in PRESETS:
        c = get_preset(name)
        assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown; expected one of"):
        get_preset("nope")


@pytest.mark.parametrize("env, needle", [
    ({"USE_SWIGLU": "ture"}, "USE_SWIGLU='ture': expected 0/1/true/false/yes/no/on/off"),
    ({"QAT": "2"}, "QAT='2': expected 0/1/true/false/yes/no/on/off"),  # the seed scripts' bool(int()) reads it as on
    ({"FP16_EMBED": "yes please"}, "FP16_EMBED='yes please': expected 0/1"),
    ({"SWA_ENABLED": "swa"}, "SWA_ENABLED='swa': expected 0/1"),
    ({"BIGRAM_HASH": "2"}, "BIGRAM_HASH='2': expected 0/1"),
    ({"SMEAR_GATE": "perdim"}, "SMEAR_GATE='perdim': expected 0/1/true/false/yes/no/on/off (1 = per_dim) or a mode"),
    ({"QUANT_BITS": "3"}, "QUANT_BITS='3': expected one of (4, 5, 6, 7, 8)"),  # 7: PR #1855's int7
    ({"NUM_LAYERS": "abc"}, "NUM_LAYERS='abc' (model.num_layers): expected an integer, got 'abc'"),
    ({"NUM_LAYERS": "0"}, "NUM_LAYERS='0' (model.num_layers): expected a positive integer"),  # a config check
    ({"NUM_HEADS": "7"}, "NUM_HEADS='7' (model.num_heads): must divide model_dim=512"),
    ({"TIE_EMBEDDINGS": "2"}, "TIE_EMBEDDINGS='2' (model.tie_embeddings): expected a boolean"),
    ({"QAT_FRACTION": "abc"}, "QAT_FRACTION='abc': expected a number in (0, 1]"),
    ({"QAT_FRACTION": "0"}, "QAT_FRACTION='0': expected a number in (0, 1]"),
    ({"QAT": "0", "QAT_FRACTION": "0.2"}, "QAT='0' and QAT_FRACTION='0.2' disagree on qat.enabled"),
    ({"WARMDOWN_ITERS": "100", "WARMDOWN_STEPS": "200"}, "disagree on schedule.warmdown_iters"),
    ({"BIGRAM_HASH": "1"}, "BIGRAM_HASH='1': BigramHash needs a table size: set BIGRAM_BUCKETS=N"),
])
def test_bad_environment_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError) as e:
        from_env(Config(), env)
    assert needle in str(e.value)


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), (" On ", True), ("YES", True),
                                       ("0", False), ("false", False), ("off", False), ("No", False)])
def test_environment_switches_take_the_boolean_words(value, on):
    c = from_env(Config(), {"USE_SWIGLU": value, "QAT": value, "FP16_EMBED": value, "SWA_ENABLED": value})
    assert (c.model.mlp == "swiglu", c.qat.enabled, c.export.embed_fp16, c.averaging.mode == "swa") == (on,) * 4


@pytest.mark.parametrize("value, mode", [("1", "per_dim"), ("0", "off"), ("true", "per_dim"), ("off", "off"),
                                         ("scalar", "scalar"), ("per_dim", "per_dim"), ("PER_DIM", "per_dim")])
def test_smear_gate_takes_booleans_and_mode_names(value, mode):
    assert from_env(Config(), {"SMEAR_GATE": value}).model.smear_gate == mode


def test_environment_switches_that_agree_and_bigram_with_a_table():
    c = from_env(Config(), {"QAT": "1", "QAT_FRACTION": "1.0", "BIGRAM_HASH": "1", "BIGRAM_BUCKETS": "4096",
                            "WARMDOWN_ITERS": "300", "WARMDOWN_STEPS": "300", "QUANT_BITS": "6"})
    assert (c.qat.enabled, c.qat.start_frac, c.model.bigram_buckets) == (True, 0.0, 4096)
    assert c.schedule.warmdown_iters == 300
    assert (c.export.bits_attn, c.export.bits_mlp, c.export.bits_other) == (6, 6, 8)
    assert from_env(get_preset("pr314_11l_int4mlp_bigram_swa"), {"BIGRAM_HASH": "1"}).model.bigram_buckets > 0
    assert from_env(get_preset("pr314_11l_int4mlp_bigram_swa"), {"BIGRAM_HASH": "0"}).model.bigram_buckets == 0


@pytest.mark.parametrize("compressor,level,ok", [
    ("zlib", 99, False), ("zlib", 9, True), ("zlib", 0, True), ("zlib", -1, True), ("zlib", -2, False),
    ("zstd", 22, True), ("zstd", 23, False), ("zstd", 0, False), ("lzma", 9, True), ("lzma", 10, False),
])
def test_export_level_is_checked_per_compressor_at_config_time(compressor, level, ok):
    """An out-of-range level used to fail only in export, after the whole training run."""
    overrides = {"export.compressor": compressor, "export.level": level}
    if ok:
        assert apply_overrides(Config(), overrides).export.level == level
    else:
        with pytest.raises(ConfigError, match=rf"export\.level: .*{compressor}.*got {level}"):
            apply_overrides(Config(), overrides)


@pytest.mark.parametrize("override, needle", [
    ("train.seed=-1", "train.seed: expected an integer in [0, 4294967295], got -1"),
    ("train.seed=4294967296", "train.seed: expected an integer in [0, 4294967295]"),
    ("optim.adam_eps=-1", "optim.adam_eps: expected > 0"),
    ("optim.adam_eps=0", "optim.adam_eps: expected > 0"),
    ("optim.matrix_lr=inf", "optim.matrix_lr: expected a finite number, got inf"),
    ("optim.scalar_lr=nan", "optim.scalar_lr: expected a finite number, got nan"),
    ("model.rope_base=0", "model.rope_base: expected > 0"),
    ("model.qk_gain_init=nan", "model.qk_gain_init: expected a finite number, got nan"),
    ("model.tied_embed_init_std=-1", "model.tied_embed_init_std: expected >= 0"),
    ("model.logit_softcap=inf", "model.logit_softcap: expected a finite number"),
    ("model.bos_id=-2", "model.bos_id: expected -1 (none) or a token id"),
    ("optim.embed_weight_decay=-inf", "optim.embed_weight_decay: expected a finite number"),
    ("train.max_wallclock_seconds=inf", "train.max_wallclock_seconds: expected a finite number"),
    ("schedule.warmdown_frac=nan", "schedule.warmdown_frac: expected a finite number"),
    ("averaging.swa_start_lr_scale=inf", "averaging.swa_start_lr_scale: expected a finite number"),
    ("export.gptq_damp=nan", "export.gptq_damp: expected a finite number"),
    ("qat.start_frac=nan", "qat.start_frac: expected a finite number"),
])
def test_nonsense_numbers_are_refused_at_config_time_naming_the_key(override, needle):
    """Each of these passed the config checks before and failed later (or trained on NaNs) without naming it."""
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), [override])
    assert needle in str(err.value)


@pytest.mark.parametrize("override", ["export.prune_frac_mlp=-1.0", "optim.embed_weight_decay=-1.0",
                                      "model.bos_id=-1", "train.seed=0", "train.seed=4294967295",
                                      "model.tied_embed_init_std=0", "optim.adam_eps=1e-12"])
def test_sentinels_and_edge_values_stay_allowed(override):
    apply_overrides(Config(), [override])


def test_every_committed_run_config_still_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "runs").rglob("config.json"))
    assert configs, "no committed runs found"
    for path in configs:
        Config.from_json(path)  # raises ConfigError naming the file on a refused value
    for name in PRESETS:
        get_preset(name)
