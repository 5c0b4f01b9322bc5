"""Reference pages that restate code must not drift from it.

- docs/recipes.md lists exactly the recipe fields, step types, end conditions,
  alarm kinds, mitigation actions and parameters that the firmware's validator
  (firmware/fieldrig/echem/recipe.py, mitigation.py) accepts, and every JSON example in
  it validates;
- docs/building-a-rig.md wires every part to the GPIO that boards/pico2w.py's PINS says.

The recipe modules are plain Python as well, so they are imported here from firmware/;
the board's pin map is read from its source.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from fieldrig_hil.firmware_build import firmware_module

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def section(text: str, heading: str) -> str:
    """The body under a Markdown heading (exact heading text), up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)$", line)
        if m and m.group(2).strip() == heading:
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1:]:
                m2 = re.match(r"(#+) ", nxt)
                if m2 and len(m2.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"no heading {heading!r}")


def first_column(body: str) -> list[str]:
    """Code-spanned names in the first column of the Markdown tables of a section."""
    names = []
    for line in body.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if m:
            names.append(m.group(1))
    return names


@pytest.fixture(scope="module")
def recipes_md() -> str:
    return (DOCS / "recipes.md").read_text()


def test_top_level_fields_are_the_validators(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    assert sorted(first_column(section(recipes_md, "Top level"))) == sorted(recipe.TOP_FIELDS)


def test_every_step_type_and_its_fields_are_documented(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    steps = section(recipes_md, "Steps")
    documented = re.findall(r"^### `([a-z_]+)`$", steps, re.M)
    assert documented == list(recipe.STEP_TYPES)
    for t in recipe.STEP_TYPES:
        fields = first_column(section(recipes_md, f"`{t}`"))
        assert sorted(fields) == sorted(recipe.STEP_FIELDS[t]), t
    # The fields every step shares, besides its own.
    for common in ("`type`", "`label`", "`until`"):
        assert common in steps


def test_end_conditions_are_the_validators(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    body = section(recipes_md, "End conditions (`until`)")
    assert sorted(first_column(body)) == sorted(recipe.UNTIL_FIELDS)


def test_alarm_kinds_actions_and_parameters_are_the_policys(recipes_md: str) -> None:
    mit = firmware_module("fieldrig.echem.mitigation")
    mitigation = section(recipes_md, "Mitigation")
    kinds = [k for k in first_column(mitigation) if k in mit.KINDS or k in mit.DEFAULT_POLICY]
    assert sorted(set(kinds)) == sorted(mit.KINDS) == sorted(mit.DEFAULT_POLICY)
    assert sorted(first_column(section(recipes_md, "Actions"))) == sorted(mit.ACTIONS)
    assert sorted(first_column(section(recipes_md, "Parameters"))) == sorted(mit.PARAMS)
    # Each kind's default actions, as the table states them.
    for kind, policy in mit.DEFAULT_POLICY.items():
        row = next(x for x in mitigation.splitlines() if x.startswith(f"| `{kind}` |"))
        assert re.findall(r"[a-z_]+", row.split("|")[2])[: len(policy["actions"])] \
            == policy["actions"], kind
    top = section(recipes_md, "Top level")
    for kind in mit.KINDS:
        assert f"`{kind}`" in top


def test_every_json_example_validates(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    blocks = re.findall(r"```json\n(.*?)```", recipes_md, re.S)
    assert len(blocks) >= 2
    for text in blocks:
        recipe.validate(json.loads(text))


def test_example_files_are_listed_and_valid(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    listed = first_column(section(recipes_md, "Examples"))
    files = sorted(p.name for p in (DOCS / "recipes").glob("*.json"))
    assert sorted(listed) == files
    for name in files:
        recipe.validate((DOCS / "recipes" / name).read_text())


def test_validator_error_example_is_the_real_message(recipes_md: str) -> None:
    recipe = firmware_module("fieldrig.echem.recipe")
    bad = {"recipe": 1, "name": "x", "area_cm2": 1.0,
           "steps": [{"type": "rest", "until": {"time_s": 1}}, {"type": "rest", "until": {
               "time_s": 1}}, {"type": "loop", "count": 2, "steps": [
                   {"type": "plate", "current_ma_cm2": 0, "until": {"time_s": 1}}]}]}
    with pytest.raises(recipe.RecipeError) as e:
        recipe.validate(bad)
    assert f"`{e.value}`" in recipes_md


def board_pins() -> dict[str, int]:
    """PINS of boards/pico2w.py, read from the source (the module imports the drivers,
    which need MicroPython's own modules)."""
    tree = ast.parse((ROOT / "firmware" / "boards" / "pico2w.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PINS" for t in node.targets):
            pins: dict[str, int] = ast.literal_eval(node.value)
            return pins
    raise AssertionError("no PINS in boards/pico2w.py")


def test_building_a_rig_wiring_matches_the_board_pins() -> None:
    pins = board_pins()
    text = (DOCS / "building-a-rig.md").read_text()
    body = section(text, "Wiring to the Pico 2 W")
    seen: dict[str, int] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"GP\d+", cells[2]):
            continue
        signal = cells[3].strip("`")
        assert signal in pins, line
        assert cells[2] == f"GP{pins[signal]}", line
        seen[signal] = pins[signal]
    assert seen == pins
