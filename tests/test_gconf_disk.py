"""X-Road's on-disk global configuration directory (gateway.globalconf.disk)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.globalconf import disk
from gateway.globalconf.disk import (
    InstallFile,
    check_conf_dir,
    configuration_files,
    install_conf,
    instance_dir_name,
    read_conf_dir,
    read_metadata,
    readiness_state,
)
from protocols.gconf.errors import GlobalConfError
from protocols.gconf.params import ClientId, build_shared_params, parse_shared_params

GC = "xroad/globalconf"
V6_DIR = "xroad/gconf-download/public/V6/20251110170000548026000"
EXPIRES = datetime(2124, 5, 20, 17, 42, 55, tzinfo=UTC)


def _expectations(vectors: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((vectors / GC / "expectations.json").read_text())
    return doc


# --------------------------------------------------------------------------- expectations.json

def _fs_validator(vectors: Path, case: dict[str, Any]) -> None:
    target = vectors / GC / case["input"].split(" ")[0].rstrip("/")
    assert readiness_state(target) == case["expect"]["readiness_state"]
    if case["expect"]["readiness_state"] == "READY_TO_INIT":
        check_conf_dir(target)
    else:
        with pytest.raises(GlobalConfError) as info:
            read_conf_dir(target)
        assert info.value.code == "gconf.dir_invalid"


def _versioned_dir(vectors: Path, case: dict[str, Any]) -> None:
    conf = read_conf_dir(vectors / GC / case["input"].rstrip("/"))
    exp = case["expect"]
    assert conf.own_instance == exp["instance_identifier"]
    for inst in exp["private_found"]:
        assert conf.private[inst].instance == inst
    for inst in exp["shared_found"]:
        assert conf.shared[inst].instance == inst
    for inst in exp["private_absent"]:
        assert inst not in conf.private
    for inst in exp["shared_absent"]:
        assert inst not in conf.shared
    assert conf.shared["foo_v2"].version == 2 and conf.shared["baz_v3"].version == 3
    assert conf.shared["EE"].version == 4 and conf.private["EE"].version == 4
    assert conf.expires == EXPIRES
    # the metadata of foo_v2's private params says instanceIdentifier "v2": the directory name counts
    assert conf.metadata["foo_v2/private-params.xml"].instance_identifier == "v2"


def _config_files(vectors: Path, case: dict[str, Any]) -> None:
    base = vectors / GC / case["input"].rstrip("/")
    files = configuration_files(base)
    assert set(case["expect"]["configuration_files_include"]) <= set(files)
    assert "instance-identifier" not in files and "bar/private-params.xml" not in files
    assert not any(f.endswith(".metadata") for f in files)
    assert read_conf_dir(base).files == tuple(files)


def _round_trip_on_disk(vectors: Path, case: dict[str, Any]) -> None:
    # the version comes from the .metadata file next to the input
    conf = read_conf_dir(vectors / GC / "globalconf_good_v4")
    assert conf.metadata[case["input"].split("/", 1)[1]].configuration_version == 4
    ee = conf.shared["EE"]
    again = parse_shared_params(build_shared_params(ee), 6)
    assert dataclasses.replace(again, version=ee.version) == ee


def _group_membership(vectors: Path, case: dict[str, Any]) -> None:
    conf = read_conf_dir(vectors / GC / case["input"].rstrip("/"))
    instance, code = (x.strip().strip('"') for x in case["expect"]["group"].split(" / "))
    for subject, expected in case["expect"]["members"].items():
        ident = subject.split(" ")[1]
        assert conf.is_member_of_global_group(ClientId.parse(ident), instance, code) is expected, subject
    for subject, expected in case["expect"]["other"].items():
        ident, group = subject.split(" in group ")
        g_instance, g_code = (x.strip() for x in group.split(" / "))
        assert conf.is_member_of_global_group(ClientId.parse(ident.split(" ")[1]), g_instance, g_code) is expected


def _approved_cas(vectors: Path, case: dict[str, Any]) -> None:
    conf = read_conf_dir(vectors / GC / case["input"].rstrip("/"))
    for key, exp in case["expect"].items():
        if key == "result":
            continue
        instance, ca_name = key.rsplit("_", 1)
        ca = conf.shared[instance].ca_by_name(ca_name)
        assert ca is not None and ca.acme_server is not None
        assert ca.acme_server.directory_url == exp["acme_server_directory_url"]
        assert ca.acme_server.authentication_certificate_profile_id == exp["authentication_certificate_profile_id"]
        assert ca.acme_server.signing_certificate_profile_id == exp["signing_certificate_profile_id"]


def _anchor_in_directory(vectors: Path, case: dict[str, Any]) -> None:
    # Anchors are not part of the directory; the private parameters of EE carry one federated anchor
    # in the same configurationAnchor format, which the directory reader exposes.
    conf = read_conf_dir(vectors / GC / "globalconf_good_v4")
    private = conf.own_private
    assert private is not None
    assert [a.instance for a in private.anchors] == ["bar"]
    assert private.anchors[0].sources[0].download_url == "http://www.bar.com/conf"
    assert case["id"].startswith("ConfigurationAnchorTest.")


HANDLERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "ConfigurationAnchorTest.readAnchorV2": _anchor_in_directory,
    "ConfigurationAnchorTest.equalsAnchorV2": _anchor_in_directory,
    "FSGlobalConfValidatorTest[globalconf_good_v4]": _fs_validator,
    "FSGlobalConfValidatorTest[instance-identifier file]": _fs_validator,
    "VersionedConfigurationDirectoryTest.readDirectoryContainingV4V3AndV2Configurations": _versioned_dir,
    "VersionedConfigurationDirectoryTest.readConfigurationFilesContainingV4V3AndV2": _config_files,
    "SharedParametersMarshallRoundTripTest[v4]": _round_trip_on_disk,
    "GlobalConfVer4Test.isSubjectInGlobalGroup": _group_membership,
    "GlobalConfVer4Test.getApprovedCAs": _approved_cas,
}


def test_every_expectation_case_has_a_handler(vectors: Path) -> None:
    assert {c["id"] for c in _expectations(vectors)["cases"]} == set(HANDLERS)


@pytest.mark.parametrize("case_id", sorted(HANDLERS))
def test_expectation_case(vectors: Path, case_id: str) -> None:
    case = next(c for c in _expectations(vectors)["cases"] if c["id"] == case_id)
    HANDLERS[case_id](vectors, case)


# --------------------------------------------------------------------------- reading

def test_dev_directory_without_private_params_or_expiry(vectors: Path) -> None:
    conf = read_conf_dir(vectors / GC / "globalconf_good2_v3")
    assert conf.own_instance == "DEV" and conf.own_private is None and conf.expires is None
    assert conf.own_shared.version == 3
    assert not conf.is_expired(datetime(2999, 1, 1, tzinfo=UTC))
    assert conf.files == ("DEV/shared-params.xml",)


def test_confclient_directory_lists_every_file(vectors: Path) -> None:
    base = vectors / "xroad/gconf-download/confclient-tests/test-conf-simple"
    assert configuration_files(base) == ["EE/bar.xml", "EE/foo.xml", "EE/private-params.xml",
                                         "EE/shared-params.xml"]
    conf = read_conf_dir(base)  # no .metadata files at all: version 2, no expiry
    assert conf.own_shared.version == 2 and conf.expires is None


@pytest.fixture
def good_copy(vectors: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "globalconf"
    shutil.copytree(vectors / GC / "globalconf_good_v4", dest)
    return dest


def test_directory_states(tmp_path: Path, good_copy: Path) -> None:
    assert readiness_state(tmp_path / "missing") == "FAILURE_CONFIGURATION_ERROR"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "instance-identifier").write_text("EE")
    assert readiness_state(empty) == "FAILURE_MALFORMED"
    with pytest.raises(GlobalConfError) as info:
        read_conf_dir(empty)
    assert info.value.code == "gconf.dir_empty"
    (good_copy / "instance-identifier").unlink()
    assert readiness_state(good_copy) == "FAILURE_MISSING_INSTANCE_IDENTIFIER"
    with pytest.raises(GlobalConfError) as info:
        read_conf_dir(good_copy)
    assert info.value.code == "gconf.instance_identifier_missing"


def test_own_instance_must_have_shared_params(good_copy: Path) -> None:
    (good_copy / "instance-identifier").write_text("XX\n")
    with pytest.raises(GlobalConfError) as info:
        read_conf_dir(good_copy)
    assert info.value.code == "gconf.own_instance_missing"


def test_expiry_and_federated_lookup(good_copy: Path) -> None:
    meta = good_copy / "bar/shared-params.xml.metadata"
    doc = json.loads(meta.read_text())
    doc["expirationDate"] = "2020-01-01T00:00:00Z"
    meta.write_text(json.dumps(doc))
    own = good_copy / "EE/private-params.xml.metadata"
    doc = json.loads(own.read_text())
    doc["expirationDate"] = "2100-01-01T00:00:00.123+02:00"
    own.write_text(json.dumps(doc))
    conf = read_conf_dir(good_copy)
    assert conf.expires == datetime(2099, 12, 31, 22, 0, 0, 123000, tzinfo=UTC)  # the earliest own file
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert conf.find_shared("bar", now) is None  # federated and expired
    assert conf.find_shared("EE", datetime(2200, 1, 1, tzinfo=UTC)) is conf.shared["EE"]  # own: always
    assert conf.find_shared("baz_v3", now) is conf.shared["baz_v3"]
    assert conf.is_expired(datetime(2100, 1, 1, tzinfo=UTC)) and not conf.is_expired(now)


@pytest.mark.parametrize(("content", "code"), [
    (b"{not json", "gconf.metadata_invalid"),
    (b"[1, 2]", "gconf.metadata_invalid"),
    (b'{"configurationVersion": "four"}', "gconf.metadata_invalid"),
    (b'{"configurationVersion": "9"}', "gconf.unsupported_version"),
    (b'{"expirationDate": "tomorrow"}', "gconf.metadata_invalid"),
    (b'{"configurationVersion": "2"}', "gconf.schema_invalid"),  # a V4 file read as V2
])
def test_bad_metadata(good_copy: Path, content: bytes, code: str) -> None:
    (good_copy / "EE/shared-params.xml.metadata").write_bytes(content)
    with pytest.raises(GlobalConfError) as info:
        read_conf_dir(good_copy)
    assert info.value.code == code


def test_metadata_defaults(good_copy: Path) -> None:
    (good_copy / "foo_v2/shared-params.xml.metadata").unlink()
    meta = read_metadata(good_copy / "foo_v2/shared-params.xml")
    assert (meta.configuration_version, meta.expiration_date) == (2, None)
    assert read_metadata(good_copy / "bar/shared-params.xml").configuration_version == 3
    assert read_conf_dir(good_copy).shared["foo_v2"].version == 2


def test_broken_file_names_itself(good_copy: Path) -> None:
    f = good_copy / "baz_v3/shared-params.xml"
    f.write_bytes(f.read_bytes().replace(b"ocspFreshnessSeconds>", b"ocspFreshness>"))
    with pytest.raises(GlobalConfError) as info:
        read_conf_dir(good_copy)
    assert info.value.code == "gconf.schema_invalid"
    assert info.value.message.startswith("baz_v3/shared-params.xml: ")


def test_instance_dir_name() -> None:
    assert instance_dir_name("EE") == "EE"
    assert instance_dir_name("foo_v2") == "foo_v2"
    assert instance_dir_name("a b/c~ä") == "a+b%2Fc%7E%C3%A4"
    assert disk._instance_from_dir("a+b%2Fc%7E%C3%A4") == "a b/c~ä"


# --------------------------------------------------------------------------- installing

def _files_from(vectors: Path, rel_dir: str, instance: str, version: int) -> list[InstallFile]:
    out = []
    for name, cid in (("shared-params.xml", "SHARED-PARAMETERS"), ("private-params.xml", "PRIVATE-PARAMETERS")):
        src = vectors / rel_dir / name
        out.append(InstallFile(f"{instance}/{name}", src.read_bytes(),
                               {"contentIdentifier": cid, "instanceIdentifier": instance,
                                "configurationVersion": str(version)}))
    return out


def _v6_files(vectors: Path) -> list[InstallFile]:
    return _files_from(vectors, V6_DIR, "DEV", 6)


def _ee_files(vectors: Path) -> list[InstallFile]:
    return _files_from(vectors, f"{GC}/globalconf_good_v4/EE", "EE", 4)


def _siblings(conf: Path) -> list[str]:
    return sorted(p.name for p in conf.parent.iterdir() if p.name != conf.name)


def test_install_then_read(vectors: Path, tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "globalconf"
    install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert conf.is_symlink() and not os.path.isabs(os.readlink(conf))
    got = read_conf_dir(conf)
    assert got.own_instance == "DEV" and got.expires == EXPIRES
    assert got.files == ("DEV/private-params.xml", "DEV/shared-params.xml")
    assert got.own_shared.version == 6 and got.own_private is not None
    assert (conf / "instance-identifier").read_text() == "DEV"
    assert (conf / "files").read_text() == "DEV/shared-params.xml\nDEV/private-params.xml\n"
    meta = json.loads((conf / "DEV/shared-params.xml.metadata").read_text())
    assert meta == {"contentIdentifier": "SHARED-PARAMETERS", "instanceIdentifier": "DEV",
                    "configurationVersion": "6", "expirationDate": "2124-05-20T17:42:55Z"}
    assert (conf / "DEV/shared-params.xml").read_bytes() == (vectors / V6_DIR / "shared-params.xml").read_bytes()


def test_reinstall_replaces_and_keeps_one_previous_generation(vectors: Path, tmp_path: Path) -> None:
    conf = tmp_path / "globalconf"
    install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    first = os.path.realpath(conf)
    install_conf(conf, own_instance="EE", files=_ee_files(vectors), expires=EXPIRES - timedelta(days=1))
    second = os.path.realpath(conf)
    assert read_conf_dir(conf).own_instance == "EE"
    assert read_conf_dir(conf).expires == EXPIRES - timedelta(days=1)
    assert os.path.isdir(first)  # a reader still inside it is not cut short
    install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert not os.path.exists(first) and os.path.isdir(second)
    assert len(_siblings(conf)) == 2  # current + previous; no temporary links left


def test_install_over_a_plain_directory(vectors: Path, good_copy: Path) -> None:
    assert not good_copy.is_symlink()
    install_conf(good_copy, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert good_copy.is_symlink()
    assert read_conf_dir(good_copy).own_instance == "DEV"


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5])
def test_failure_midway_leaves_old_set_intact(vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              fail_at: int) -> None:
    conf = tmp_path / "globalconf"
    install_conf(conf, own_instance="EE", files=_ee_files(vectors), expires=EXPIRES)
    before = read_conf_dir(conf)
    target_before = os.path.realpath(conf)
    listing_before = _siblings(conf)
    real_write = disk._write_file
    calls = {"n": 0}

    def failing_write(file: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            # half a file, then the disk is full
            with open(file, "wb") as fh:
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(file, data)

    monkeypatch.setattr(disk, "_write_file", failing_write)
    with pytest.raises(GlobalConfError) as info:
        install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert info.value.code == "gconf.install_failed"
    assert "No space left" in info.value.message
    assert os.path.realpath(conf) == target_before
    after = read_conf_dir(conf)
    assert after.own_instance == "EE" and after.files == before.files and after.shared == before.shared
    assert _siblings(conf) == listing_before  # the half-written set is gone


def test_set_that_does_not_load_is_not_installed(vectors: Path, tmp_path: Path) -> None:
    conf = tmp_path / "globalconf"
    install_conf(conf, own_instance="EE", files=_ee_files(vectors), expires=EXPIRES)
    files = _v6_files(vectors)
    broken = [InstallFile(files[0].path, files[0].data.replace(b"<instanceIdentifier>DEV</instanceIdentifier>",
                                                                    b"<instance>DEV</instance>", 1),
                          files[0].metadata), files[1]]
    with pytest.raises(GlobalConfError) as info:
        install_conf(conf, own_instance="DEV", files=broken, expires=EXPIRES)
    assert info.value.code == "gconf.schema_invalid"
    assert read_conf_dir(conf).own_instance == "EE"
    with pytest.raises(GlobalConfError) as info:  # own instance without shared parameters
        install_conf(conf, own_instance="XX", files=files, expires=EXPIRES)
    assert info.value.code == "gconf.own_instance_missing"
    assert read_conf_dir(conf).own_instance == "EE"
    assert len(_siblings(conf)) == 1


@pytest.mark.parametrize("path", ["../evil.xml", "/etc/passwd", "EE/../../x", "EE/sub/x.xml", "shared-params.xml",
                                  "EE/x.xml.metadata", "EE/files", ".hidden/x", "EE\\x"])
def test_install_refuses_bad_paths(vectors: Path, tmp_path: Path, path: str) -> None:
    files = [*_v6_files(vectors), InstallFile(path, b"x", {})]
    with pytest.raises(GlobalConfError) as info:
        install_conf(tmp_path / "gc", own_instance="DEV", files=files, expires=EXPIRES)
    assert info.value.code == "gconf.install_invalid"
    assert not (tmp_path / "gc").exists()


def test_install_refuses_bad_arguments(vectors: Path, tmp_path: Path) -> None:
    for kwargs in ({"own_instance": "DEV", "files": [*_v6_files(vectors), *_v6_files(vectors)], "expires": EXPIRES},
                   {"own_instance": "DEV\n", "files": _v6_files(vectors), "expires": EXPIRES},
                   {"own_instance": "DEV", "files": _v6_files(vectors), "expires": datetime(2124, 1, 1)}):
        with pytest.raises(GlobalConfError) as info:
            install_conf(tmp_path / "gc", **kwargs)  # type: ignore[arg-type]
        assert info.value.code == "gconf.install_invalid"
    (tmp_path / "file").write_text("x")
    with pytest.raises(GlobalConfError) as info:
        install_conf(tmp_path / "file", own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert info.value.code == "gconf.dir_invalid"


def test_readers_never_see_a_mix(vectors: Path, tmp_path: Path) -> None:
    conf = tmp_path / "globalconf"
    sets = {"DEV": _v6_files(vectors), "EE": _ee_files(vectors)}
    install_conf(conf, own_instance="EE", files=sets["EE"], expires=EXPIRES)
    stop = threading.Event()
    seen: list[tuple[str, tuple[str, ...]]] = []
    problems: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                got = read_conf_dir(conf)
                seen.append((got.own_instance, tuple(sorted(got.shared))))
            except BaseException as exc:  # collected and asserted below
                problems.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(12):
            own = "DEV" if i % 2 == 0 else "EE"
            install_conf(conf, own_instance=own, files=sets[own], expires=EXPIRES)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:1]
    assert seen and set(seen) <= {("DEV", ("DEV",)), ("EE", ("EE",))}


def test_install_through_a_symlinked_parent(vectors: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    conf = tmp_path / "alias" / "globalconf"
    install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    install_conf(conf, own_instance="EE", files=_ee_files(vectors), expires=EXPIRES)
    install_conf(conf, own_instance="DEV", files=_v6_files(vectors), expires=EXPIRES)
    assert read_conf_dir(conf).own_instance == "DEV"
    assert len(list(real.iterdir())) == 3  # link, current, previous
