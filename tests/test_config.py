import json

import pytest

from pgolf.config import Config, ConfigError, apply_overrides, env_overrides, from_env
from pgolf.presets import PRESETS, get_preset


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
    ("export.bits_mlp=7", "expected one of (4, 5, 6, 8)"),
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
