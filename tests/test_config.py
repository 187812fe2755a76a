from pathlib import Path

import pytest
import yaml

from t2sql.config import ConfigError, PipelineConfig, apply_override, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"data": {"sources": [{"kind": "spider", "path": "data/spider_sample"}]}}


def test_overrides_change_typed_values(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.epochs=2", "train.learning_rate=5e-4", "model.base_model=foo"])
    assert cfg.train.epochs == 2.0 and cfg.train.learning_rate == 5e-4 and cfg.model.base_model == "foo"


def test_unknown_key_is_refused_with_its_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.epochz=2"])
    assert "train.epochz: unknown key" in str(err.value)


def test_bad_value_names_field_and_reason(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.learning_rate=-1"])
    assert "train.learning_rate" in str(err.value) and "greater than 0" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.quantization=fp3"])
    assert "train.quantization" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_unknown_technique_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown technique 'lorax'.*full"):
        load_config(write(tmp_path, {**BASE, "techniques": [{"name": "lorax"}]}))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_override({}, "train.epochs")
    raw = {"data": {"sources": [{"kind": "spider", "path": "x"}]}}
    apply_override(raw, "data.sources.0.limit=5")
    assert raw["data"]["sources"][0]["limit"] == 5


def test_grid_expands_techniques(tmp_path):
    cfg = load_config(write(tmp_path, {**BASE, "grid": {"train.learning_rate": [1e-3, 5e-4], "train.epochs": [1, 2]}}))
    specs = cfg.expanded_techniques()
    assert len(specs) == 4
    assert {s.train["learning_rate"] for s in specs} == {1e-3, 5e-4}
    assert len({s.label for s in specs}) == 4
    with pytest.raises(ConfigError, match="grid key 'model.d_model'"):
        load_config(write(tmp_path, {**BASE, "grid": {"model.d_model": [1]}}))


def test_data_dir_variable_is_required_when_used(tmp_path, monkeypatch):
    from t2sql.config import expand_path

    monkeypatch.delenv("T2SQL_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="data.sources.0.path: environment variable T2SQL_DATA_DIR is not set"):
        expand_path("${T2SQL_DATA_DIR}/spider", "data.sources.0.path")
    monkeypatch.setenv("T2SQL_DATA_DIR", "/x")
    assert expand_path("${T2SQL_DATA_DIR}/spider") == "/x/spider"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert path.read_text().lstrip().startswith("#"), "every config starts with the command that runs it"
