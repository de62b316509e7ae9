"""The records' environment names (PR #1394, PR #1855) that pgolf maps: each sets its field, the loop range is
read as a group, and a bad value names its variable in one line. (Before, these names were ignored.)"""

import pytest

from pgolf.core.config import Config, ConfigError, from_env
from pgolf.running.presets import get_preset


def test_the_records_export_names_set_their_fields():
    c = from_env(Config(), {"GPTQ_RESERVE_SECONDS": "0.5", "GPTQ_CALIBRATION_BATCHES": "16",
                            "MATRIX_CLIP_SIGMAS": "12.5", "EMBED_CLIP_SIGMAS": "14", "COMPRESSOR": "brotli",
                            "VAL_BATCH_TOKENS": "262144", "MATRIX_BITS": "5", "EMBED_BITS": "6"})
    e = c.export
    assert (e.gptq_reserve_seconds, e.gptq_calibration_batches, e.sdclip_sigmas_matrix, e.sdclip_sigmas_embed,
            e.compressor) == (0.5, 16, 12.5, 14.0, "brotli")
    assert (e.bits_attn, e.bits_mlp, e.bits_other, c.train.val_batch_size) == (5, 5, 6, 262_144)
    assert from_env(Config(), {"COMPRESSOR": "pergroup"}).export.compressor == "pergroup"  # PR #1855's


@pytest.mark.parametrize("env, layers, count", [
    ({"LOOP_START": "3", "LOOP_END": "5", "NUM_LOOPS": "2"}, (3, 4, 5), 2),
    ({"LOOP_START": "4", "LOOP_END": "4", "NUM_LOOPS": "1"}, (4,), 1),
    ({"LOOP_START": "3", "LOOP_END": "5", "NUM_LOOPS": "0"}, (), 0),  # the records ignore the range then
    ({"NUM_LOOPS": "0"}, (), 0),
])
def test_loop_names_set_the_loop_range_and_count(env, layers, count):
    c = from_env(get_preset("pr1394_sp8192_gptq_sdclip_loop45x2"), env)
    assert (c.model.loop_layers, c.model.loop_count) == (layers, count)


def test_loop_names_keep_the_presets_other_half():
    """NUM_LOOPS alone changes the count of the preset's range; the range alone keeps the preset's count."""
    base = get_preset("pr1394_sp8192_gptq_sdclip_loop45x2")
    assert from_env(base, {"NUM_LOOPS": "3"}).model.loop_layers == (4, 5)
    assert from_env(base, {"NUM_LOOPS": "3"}).model.loop_count == 3
    assert from_env(base, {"LOOP_START": "3", "LOOP_END": "5"}).model.loop_count == 2


@pytest.mark.parametrize("env, needle", [
    ({"LOOP_START": "3"}, "LOOP_START='3': set LOOP_END too"),
    ({"LOOP_END": "5"}, "LOOP_END='5': set LOOP_START too"),
    ({"LOOP_START": "5", "LOOP_END": "3"}, "LOOP_END='3': expected >= LOOP_START=5"),
    ({"NUM_LOOPS": "two"}, "NUM_LOOPS='two': expected an integer >= 0"),
    ({"LOOP_START": "3", "LOOP_END": "5"}, "LOOP_END='5' (model.loop_count): loop_layers and loop_count go together"),
    ({"COMPRESSOR": "lrzip"}, "COMPRESSOR='lrzip' (export.compressor): expected one of"),
    ({"MATRIX_BITS": "3"}, "MATRIX_BITS='3': expected one of"),
    ({"GPTQ_CALIBRATION_BATCHES": "0"}, "GPTQ_CALIBRATION_BATCHES='0' (export.gptq_calibration_batches)"),
    ({"MATRIX_CLIP_SIGMAS": "-1"}, "MATRIX_CLIP_SIGMAS='-1' (export.sdclip_sigmas_matrix): expected > 0"),
    ({"VAL_BATCH_TOKENS": "1024", "VAL_BATCH_SIZE": "2048"}, "disagree on train.val_batch_size"),
])
def test_bad_record_names_name_the_variable(env, needle):
    with pytest.raises(ConfigError) as e:
        from_env(Config(), env)
    assert needle in str(e.value) and "\n" not in str(e.value)
