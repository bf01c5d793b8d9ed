"""A later round's spec (`run.rounds`): the model is the previous round's folder, whose name
matches no prompt template, so the template the run resolved is written into the spec."""

from __future__ import annotations

from pathlib import Path

from o1pruner.jobs import RunDir
from o1pruner.prompts import load_template
from o1pruner.rounds import round_spec
from o1pruner.specio import spec_from_dict


def make_spec(root: Path, template: str = "auto"):
    return spec_from_dict({
        "model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct", "prompt_template": template},
        "run": {"name": "exp1", "output_root": str(root), "rounds": 3},
    })


def test_later_rounds_keep_the_template_that_auto_chose_for_the_base_model(tmp_path):
    spec = make_spec(tmp_path)
    run = RunDir(tmp_path / "exp1")
    for r in (2, 3):
        later = round_spec(spec, run, r)
        assert "qwen" not in later.model.name_or_path.lower()  # a folder of the run
        assert load_template(later.model).name == "qwen2.5"  # as round 1 (before: generic)
        assert later.model.prompt_template == "qwen2.5"


def test_an_explicit_template_name_or_file_is_kept_as_given(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nuser: '{problem}'\n")
    run = RunDir(tmp_path / "exp1")
    for template in ("generic", str(path)):
        assert round_spec(make_spec(tmp_path, template), run, 2).model.prompt_template \
            == template
