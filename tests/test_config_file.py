"""Config files: what read_config_file accepts and refuses, what write_config_file writes, and --config through the
real CLI (flags override the file; a bad file is one line, exit 2, nothing written)."""

import math
from pathlib import Path

import pytest
from conftest import cli

from compresskit.artifacts import UserError
from compresskit.cli.config_file import read_config_file, toml_value, write_config_file

TYPES = {"temperature": float, "epochs": float, "seed": int, "overwrite": bool, "student_layers": str,
         "output_root": Path, "run_name": str, "min_speedup": float}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compress.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_are_flag_names_with_dashes_or_underscores(tmp_path):
    path = write(tmp_path, 'temperature = 4.0\nstudent-layers = "0,5"\noutput_root = "runs"\nseed = 7\n'
                           "overwrite = false\nepochs = 3\n")
    assert read_config_file(path, TYPES) == {"temperature": 4.0, "student_layers": "0,5", "output_root": Path("runs"),
                                             "seed": 7, "overwrite": False, "epochs": 3.0}


def test_an_integer_is_a_float_option_as_a_float(tmp_path):
    """``epochs = 3`` and ``--epochs 3`` must give the same value, hence the same run identity."""
    value = read_config_file(write(tmp_path, "epochs = 3\n"), TYPES)["epochs"]
    assert value == 3.0 and isinstance(value, float)


@pytest.mark.parametrize("text, needles", [
    ("temprature = 4.0\n", ["unknown option 'temprature'"]),
    ('temperature = "hot"\n', ["temperature must be a number, got 'hot'"]),
    ('temperature = "4"\n', ["temperature must be a number"]),
    ("seed = 4.5\n", ["seed must be an integer, got 4.5"]),
    ("seed = true\n", ["seed must be an integer, got True"]),
    ("overwrite = 1\n", ["overwrite must be true or false, got 1"]),
    ("student-layers = 5\n", ["student-layers must be a string, got 5"]),
    ("[distill]\ntemperature = 4.0\n", ["unknown option 'distill'"]),
    ("temperature = [1, 2]\n", ["temperature must be a number, got a list"]),
    ('student-layers = "0"\nstudent_layers = "1"\n', ["'student_layers' is given twice"]),
    ("temperature = \n", ["is not valid TOML"]),
])
def test_a_bad_file_is_refused_with_one_line_naming_file_and_key(tmp_path, text, needles):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        read_config_file(path, TYPES)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, message


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml", TYPES)


def test_written_file_reads_back_to_the_same_values(tmp_path):
    values = {"temperature": 1e-4, "min_speedup": math.inf, "epochs": 2.0, "seed": 42, "overwrite": True,
              "student_layers": 'quote " back\\slash tab\t newline\n bell\x07 del\x7f ünï',
              "output_root": Path("a b/c"), "run_name": None}
    path = tmp_path / "run" / "config.toml"
    write_config_file(path, values)
    text = path.read_text(encoding="utf-8")
    assert "run-name" not in text  # None: left out, so the option keeps its default
    assert "student-layers = " in text and "overwrite = true" in text and "temperature = 0.0001" in text
    assert read_config_file(path, TYPES) == {k: v for k, v in values.items() if v is not None}
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


def test_toml_values():
    assert [toml_value(v) for v in (True, False, 3, 2.0, 1e-05, -math.inf)] == ["true", "false", "3", "2.0", "1e-05",
                                                                               "-inf"]
    assert toml_value(Path("x/y")) == '"x/y"' and toml_value('a"b') == '"a\\"b"'
    with pytest.raises(TypeError):
        toml_value((1, 2))


# --- through the CLI: every refusal happens before anything is written

def test_unknown_key_is_refused_before_anything_is_written(tmp_path, tiny_encoder, tiny_csv):
    config = write(tmp_path, "temperature = 4.0\nstudent-layer = \"0\"\n")
    proc = cli("distill-and-export", "--config", str(config), "--teacher", str(tiny_encoder), "--dataset",
               str(tiny_csv), "--output-root", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = " ".join(line for line in proc.stderr.splitlines() if line.strip())
    assert "error:" in error and "unknown option 'student-layer'" in error and "compress.toml" in error
    assert not (tmp_path / "out").exists()


def test_flags_on_the_command_line_override_the_file(tmp_path, tiny_encoder, tiny_csv):
    """The file sets two bad values; the command line replaces one: only the other is reported, and nothing is
    written. Without the flag, both are."""
    config = write(tmp_path, f'temperature = 0\nalpha = 1.5\nteacher = "{tiny_encoder}"\ndataset = "{tiny_csv}"\n'
                             f'output-root = "{tmp_path / "out"}"\n')
    overridden = cli("distill-and-export", "--config", str(config), "--temperature", "3")
    assert overridden.returncode == 2, overridden.stderr[-2000:]
    assert "--alpha must be between 0 and 1, got 1.5" in overridden.stderr and "--temperature" not in overridden.stderr
    both = cli("distill-and-export", "--config", str(config))
    assert both.returncode == 2 and "--temperature must be > 0" in both.stderr and "--alpha" in both.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_task_is_refused_from_the_file_too(tmp_path, tiny_encoder, tiny_csv):
    config = write(tmp_path, 'task = "translation"\n')
    proc = cli("distill-and-export", "--config", str(config), "--teacher", str(tiny_encoder), "--dataset",
               str(tiny_csv), "--output-root", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--task must be one of auto, text-classification, causal-lm, got 'translation'" in proc.stderr
    assert not (tmp_path / "out").exists()
