"""The shared document reader: JSON or YAML by the file's suffix, and a named error for each way
a file cannot be had (none there, not readable, not decodable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.errors import InputError
from flags.docfile import read_document


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("plan.json", '{"groups": [1, 2]}', id="json"),
        pytest.param("plan.yaml", "groups: [1, 2]\n", id="yaml"),
        pytest.param("plan.yml", "groups:\n  - 1\n  - 2\n", id="yml"),
        pytest.param("plan", "groups: [1, 2]\n", id="no-suffix-is-yaml"),
        pytest.param("plan.txt", '{"groups": [1, 2]}', id="json-text-read-as-yaml"),
    ],
)
def test_the_suffix_chooses_the_decoder(tmp_path: Path, name: str, text: str) -> None:
    """``.json`` is decoded as JSON; every other name as YAML, which also takes JSON text."""
    path = tmp_path / name
    path.write_text(text)
    assert read_document(path, "plan") == {"groups": [1, 2]}


def test_a_missing_file_says_so_under_the_callers_name(tmp_path: Path) -> None:
    """Without ``missing`` the message is ``SOURCE: no such file``, and the cause is kept."""
    with pytest.raises(InputError, match=r"^profile absent\.yaml: no such file$") as caught:
        read_document(tmp_path / "absent.yaml", "profile absent.yaml")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_a_missing_file_takes_the_callers_whole_message(tmp_path: Path) -> None:
    """``missing`` replaces the message for a file that is not there, and only for that."""
    with pytest.raises(InputError, match=r"^no plan here \(set IT\)$"):
        read_document(tmp_path / "absent.json", "plan", missing="no plan here (set IT)")


def test_a_directory_given_for_the_file_cannot_be_read(tmp_path: Path) -> None:
    """A directory is there but is no file: it is unreadable, not missing."""
    with pytest.raises(InputError, match=r"^plan: cannot read it \(.*Is a directory") as caught:
        read_document(tmp_path, "plan", missing="not this one")
    assert isinstance(caught.value.__cause__, IsADirectoryError)


def test_a_file_that_is_not_text_cannot_be_read(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are refused before any decoder sees them."""
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"groups: [\xff\xfe]\n")
    with pytest.raises(InputError, match=r"^plan: cannot read it \(.*can't decode"):
        read_document(path, "plan")


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        pytest.param("plan.json", "{'groups': [1, 2]}", "JSON", id="single-quoted-json"),
        pytest.param("plan.json", "groups: [1, 2]\n", "JSON", id="yaml-in-a-json-file"),
        pytest.param("plan.yaml", "groups: [1, 2\n  - name: x\n", "YAML", id="unclosed-yaml"),
        pytest.param("plan.yml", "a: 1\n\tb: 2\n", "YAML", id="tab-indented-yaml"),
    ],
)
def test_a_file_that_does_not_decode_names_its_format_on_one_line(
    tmp_path: Path, name: str, text: str, kind: str
) -> None:
    """The error says which decoder refused the file, with its reason folded onto one line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=rf"^plan: not valid {kind} \(") as caught:
        read_document(path, "plan")
    assert "\n" not in str(caught.value)
