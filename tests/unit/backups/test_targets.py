"""Backup targets: a file and a key per target; the key is root's alone and never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backups import targets
from agent.errors import InvalidArgument, NotFound, Precondition


def test_a_target_added_has_its_file_and_a_key_only_root_reads(tmp_path: Path):
    added = targets.add(tmp_path, "secondary", "/mnt/secondary/hostsnap", limit_upload_kib=100)

    assert added == targets.load(tmp_path, "secondary")
    assert added.repository == "/mnt/secondary/hostsnap" and added.limit_upload_kib == 100
    assert (added.key_file.stat().st_mode & 0o777) == 0o600
    assert len(added.key_file.read_text().strip()) >= 40
    assert targets.names(tmp_path) == ["secondary"]


def test_adding_it_again_is_refused_and_the_key_stays(tmp_path: Path):
    key = targets.add(tmp_path, "secondary", "/srv/a").key_file.read_text()

    with pytest.raises(Precondition) as again:
        targets.add(tmp_path, "secondary", "/srv/b")

    assert again.value.reason == "TARGET_EXISTS"
    assert (tmp_path / "secondary.key").read_text() == key


def test_a_kept_key_is_used_for_a_target_made_again(tmp_path: Path):
    targets.write_key(tmp_path / "secondary.key", "escrowed")

    targets.add(tmp_path, "secondary", "s3:http://rgw:7480/hostsnap")

    assert (tmp_path / "secondary.key").read_text() == "escrowed\n"


def test_a_target_without_its_key_cannot_be_used(tmp_path: Path):
    targets.add(tmp_path, "secondary", "/srv/a")
    (tmp_path / "secondary.key").unlink()

    with pytest.raises(Precondition) as missing:
        targets.load(tmp_path, "secondary")

    assert missing.value.reason == "TARGET_KEY_MISSING"


@pytest.mark.parametrize("name", ["../etc", "Upper", "", "a/b", "x" * 64])
def test_a_bad_name_is_refused(tmp_path: Path, name: str):
    with pytest.raises(InvalidArgument):
        targets.add(tmp_path, name, "/srv/a")


def test_unknown_target_and_bad_repository(tmp_path: Path):
    with pytest.raises(NotFound) as unknown:
        targets.load(tmp_path, "nope")
    assert unknown.value.reason == "TARGET_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        targets.add(tmp_path, "rel", "relative/dir")


def test_s3_credentials_are_read_from_their_file(tmp_path: Path):
    credentials = tmp_path / "rgw.s3"
    credentials.write_text("AWS_ACCESS_KEY_ID=abc\nAWS_SECRET_ACCESS_KEY = xyz\nOTHER=1\n")

    added = targets.add(tmp_path, "rgw", "s3:http://127.0.0.1:7480/b", credentials=str(credentials))

    assert added.credentials() == {"AWS_ACCESS_KEY_ID": "abc", "AWS_SECRET_ACCESS_KEY": "xyz"}
