"""The init script, run for real under dash and busybox sh with short timeouts."""

import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

from plugins.init_container import init_script

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

SHELLS = {
    "dash": ["dash", "-c"],
    "busybox": ["busybox", "sh", "-c"],
}


def shell(name):
    command = SHELLS[name]
    found = shutil.which(command[0])
    if found is None:
        pytest.fail(f"{command[0]} is not installed (.ci/run installs busybox)")
    return [found, *command[1:]]


@pytest.fixture(params=sorted(SHELLS))
def run_init(request, tmp_path):
    """Start the init script under one shell; return (process, pipes dir, config dir)."""
    command = shell(request.param)
    pipes, config = tmp_path / "pipes", tmp_path / "config"
    pipes.mkdir()
    config.mkdir()

    def start(timeout_seconds=1, uses_stdin=False):
        env = {
            "PATH": os.environ["PATH"],
            "PIPES_DIR": str(pipes),
            "CONFIG_DIR": str(config),
            "SUCCESS_FILE": "FINISHED_UPLOADING",
            "USES_STDIN": "true" if uses_stdin else "false",
            "TIMEOUT_SECONDS": str(timeout_seconds),
        }
        if request.param == "busybox":
            # Every tool the script calls comes from busybox, as in the busybox image.
            env["PATH"] = str(busybox_bin(tmp_path))
        return subprocess.Popen(
            [*command, init_script()], env=env, cwd=config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    return start, pipes, config


def busybox_bin(tmp_path):
    """A directory where every applet the script uses is busybox."""
    directory = tmp_path / "busybox-bin"
    if not directory.exists():
        directory.mkdir()
        for applet in ("sh", "mkfifo", "chmod", "du", "awk", "sleep", "cat"):
            os.symlink(shutil.which("busybox"), directory / applet)
    return directory


def test_success_when_the_success_file_arrives(run_init):
    start, pipes, config = run_init
    process = start(timeout_seconds=5)
    time.sleep(0.5)
    (config / "source_config.json").write_text('{"host": "db"}')
    (config / "FINISHED_UPLOADING").write_text("")
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert "All files copied successfully" in output
    assert {path.name for path in pipes.iterdir()} == {"stdout", "stderr"}
    assert all(stat.S_ISFIFO((pipes / name).stat().st_mode) for name in ("stdout", "stderr"))


def test_stdin_pipe_only_when_asked(run_init):
    start, pipes, config = run_init
    (config / "FINISHED_UPLOADING").write_text("")
    process = start(uses_stdin=True)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert {path.name for path in pipes.iterdir()} == {"stdin", "stdout", "stderr"}
    assert stat.S_IMODE((pipes / "stdin").stat().st_mode) == 0o666


def test_timeout_when_nothing_arrives(run_init):
    start, _, _ = run_init
    began = time.monotonic()
    process = start(timeout_seconds=1)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "Timeout after 1s" in output
    assert time.monotonic() - began >= 1


def test_timeout_resets_while_files_keep_arriving(run_init):
    start, _, config = run_init
    process = start(timeout_seconds=1)
    done = threading.Event()

    def upload():
        # Appends for 3 s, three times the timeout, then writes the success file.
        with open(config / "connector.tar", "ab") as stream:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                stream.write(os.urandom(16 * 1024))
                stream.flush()
                time.sleep(0.2)
        (config / "FINISHED_UPLOADING").write_text("")
        done.set()

    writer = threading.Thread(target=upload)
    writer.start()
    output, _ = process.communicate(timeout=30)
    writer.join()
    assert done.is_set()
    assert process.returncode == 0, output
    assert "All files copied successfully" in output
