"""The shipped JSON Schema itself: valid draft 2020-12, one file, accepts AIMET's own configs."""
from __future__ import annotations

import os

import pytest
from jsonschema import Draft202012Validator

from qsim.config import KNOWN_SUPERGROUP_PASSES, load_schema

from .conftest import GOLDEN_FILES, REPO, read_json


def test_schema_is_valid_draft_2020_12():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_top_level_schema_is_a_symlink_to_the_packaged_one():
    link = REPO / "schemas" / "quantsim_config.schema.json"
    packaged = REPO / "qsim" / "schemas" / "quantsim_config.schema.json"
    assert os.path.islink(link)
    assert os.readlink(link) == "../qsim/schemas/quantsim_config.schema.json"
    assert os.path.samefile(link, packaged)


def test_golden_file_list_is_complete():
    # 2 cnn-seed0 configs + the 9 golden model cases.
    assert len(GOLDEN_FILES) == 11


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_plain_jsonschema_accepts_every_golden_config(path):
    errors = list(Draft202012Validator(load_schema()).iter_errors(read_json(path)))
    assert errors == []


def test_pass_names_in_schema_match_the_documented_list():
    assert tuple(load_schema()["$defs"]["supergroup_pass"]["enum"]) == KNOWN_SUPERGROUP_PASSES


def test_schema_requires_the_six_sections_aimet_requires():
    assert set(load_schema()["required"]) == {
        "defaults", "params", "op_type", "supergroups", "model_input", "model_output"}
