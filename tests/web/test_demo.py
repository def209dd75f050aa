"""`bridge demo` as a person runs it: it prints where to look, and Ctrl-C stops it all."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

from tests import oneshot
from tests.processes import DemoProcess


def refused(url: str) -> bool:
    host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


def test_demo_prints_the_status_url_syncs_and_stops_everything_on_ctrl_c(tmp_path):
    demo = DemoProcess(tmp_path / "demo")
    try:
        printed = demo.wait_for("Running until Ctrl-C.")
        assert f"Status page: {demo.url}/" in printed
        simulator = re.search(r"LeadSquared simulator: (http://\S+)", printed)[1]
        landed = int(re.search(r"Activities landed in the simulator: (\d+)", printed)[1])
        assert landed >= 3  # Asha's, Ravi's and Meera's chats, at least on the leads
        asha = re.search(r"Asha Patil: activity on the lead \([^)]*attached: (image-\w+\.png)"
                         r"[^)]*\) (http://\S+)", printed)
        assert asha, printed  # her photo arrived in the CRM, attached to her chat
        # a rep's phone history (coexistence) arrives, its photo filling its placeholder
        assert "history: done, 100 %, 3 chunks, 11 new messages" in printed
        # both of Meera's files, in the order their uploads landed (the two downloads race)
        meera = re.search(r"Meera Shah: activity on the lead \([^)]*attached: ([^)]*)\)", printed)
        assert meera, printed
        assert sorted(re.sub(r"image-\w+", "image", n) for n in meera[1].split(", ")) == [
            "image.png", "price-list.pdf"], printed
        # two reps, two numbers: each chat owned by the rep whose number it came to
        assert re.search(r"Asha Patil: activity on the lead .* owned by priya\.rao@", printed)
        assert re.search(r"Ravi Kumar: activity on the lead .* owned by arjun\.mehta@", printed)
        assert "Rep Arjun Mehta <arjun.mehta@demo.invalid> owns the chats of" in printed
        lead_page = oneshot.get(asha[2]).text
        assert asha[1] in lead_page and "<img src=" in lead_page
        (photo,) = re.findall(r"<img src='([^']+)'", lead_page)
        assert oneshot.get(photo).content.startswith(b"\x89PNG")
        page = oneshot.get(f"{demo.url}/", headers={"Authorization": f"Bearer {demo.token}"})
        assert page.status_code == 200 and "+919876543210" in page.text
        status = oneshot.get(f"{demo.url}/status",
                             headers={"Authorization": f"Bearer {demo.token}"}).json()
        (sink,) = status["sinks"]
        # the Details table agrees with the banner: this run reaches no real account
        assert sink["simulated"] == "LeadSquared" and sink["details"]["simulator"] is True, sink
        assert demo.interrupt() == 0
        assert refused(demo.url) and refused(simulator)
        assert "Stopping the demo" in demo.output()
    finally:
        demo.kill()


def test_demo_on_a_busy_port_says_so_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "bridge", "demo", "--port", str(port),
                               "--workdir", str(tmp_path)], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"Error: 127.0.0.1:{port} is already in use (another "
                                   "bridge or program listens there): stop it, or choose "
                                   "another with `bridge demo --port N`")
