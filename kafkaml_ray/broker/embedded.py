"""The embedded Apache Kafka broker: KRaft, single node, jars from Maven Central
(`EmbeddedKafka`, which starts, stops and inspects it, and `BrokerStatus`).

The jars are resolved by Maven from ``pom.xml`` beside this file (kept in ``~/.m2``, so the
second start works offline); the broker runs on the machine's Java 17, listens on
127.0.0.1 and keeps its log directory under ``$KAFKAML_HOME/kafka``, so topics survive a
restart; its output goes to ``broker.out`` there, its pid to ``broker.pid``.

>>> from kafkaml_ray.broker import EmbeddedKafka
>>> EmbeddedKafka().version
'4.4.0'
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

from kafkaml_ray._private.procs import port_open, read_pid, spawn, stop_pid, wait_ready
from kafkaml_ray.errors import Unavailable
from kafkaml_ray.settings import Settings

__all__ = ["EmbeddedKafka", "BrokerStatus"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_POM = _HERE / "pom.xml"
_MARKER = "kafka.Kafka"  # in the broker's command line: a pid file's pid is still the broker
_NO_JAVA = (
    "{what} was not found. The embedded Kafka broker needs Java 17 or newer and Maven "
    "(Debian: 'apt install openjdk-17-jre-headless maven'); or point KAFKAML_BOOTSTRAP at an "
    "existing Kafka cluster, e.g. KAFKAML_BOOTSTRAP=kafka.example.org:9092."
)


@dataclass(frozen=True)
class BrokerStatus:
    """What `EmbeddedKafka.status` says: whether it runs, where, which Kafka, its pid and
    log directory."""

    running: bool
    address: str
    version: str
    pid: int | None
    log_dir: str

    def as_dict(self) -> dict:
        return asdict(self)


class EmbeddedKafka:
    """Start, stop and inspect the embedded broker described by ``settings``."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.dir = self.settings.home / "kafka"
        self.log_dir = self.dir / "data"
        self._pid_file = self.dir / "broker.pid"

    # -- facts -------------------------------------------------------------------------
    @property
    def version(self) -> str:
        ns = {"m": "http://maven.apache.org/POM/4.0.0"}
        node = ET.parse(_POM).getroot().find("m:properties/m:kafka.version", ns)
        assert node is not None and node.text
        return node.text

    @property
    def address(self) -> str:
        return f"{self.settings.broker_host}:{self.settings.broker_port}"

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(
            running=pid is not None and self._port_open(),
            address=self.address,
            version=self.version,
            pid=pid,
            log_dir=str(self.log_dir),
        )

    # -- life cycle --------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker and wait until it answers; harmless when it already runs."""
        found = read_pid(self._pid_file, _MARKER)
        if found is not None:
            running_on = found[1]  # the pid file holds "<pid> <port>"
            if running_on and running_on != str(self.settings.broker_port):
                raise Unavailable(
                    f"the broker of {self.settings.home} already runs on port {running_on}, "
                    f"not {self.settings.broker_port}: run 'kafkaml-ray broker stop' first"
                )
            self._wait_ready(timeout)
            return self.status()
        if self._port_open():
            raise Unavailable(
                f"port {self.settings.broker_port} on {self.settings.broker_host} is taken by "
                "another program; set KAFKAML_BROKER_PORT to a free port, or KAFKAML_BOOTSTRAP "
                "to use the Kafka cluster that listens there"
            )
        java = self._java()
        classpath = self._classpath()
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format(java, classpath, props)
        proc = spawn(
            [
                java,
                "-Xms256m",
                os.environ.get("KAFKAML_BROKER_HEAP", "-Xmx1g"),
                f"-Dlog4j2.configurationFile={_HERE / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.dir}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            self.dir / "broker.out",
            cwd=self.dir,
            pid_file=self._pid_file,
            note=str(self.settings.broker_port),
        )
        try:
            self._wait_ready(timeout, proc)
        except Unavailable:
            self.stop()
            raise
        logger.info("Kafka %s started on %s (pid %d)", self.version, self.address, proc.pid)
        return self.status()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        pid = self._pid()
        self._pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        stop_pid(pid, timeout, what="broker")
        return True

    # -- internals ---------------------------------------------------------------------
    def _pid(self) -> int | None:
        found = read_pid(self._pid_file, _MARKER)
        return None if found is None else found[0]

    def _port_open(self) -> bool:
        return port_open(self.settings.broker_port, self.settings.broker_host)

    def _answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not self._port_open():
            return False
        try:
            admin = AdminClient({"bootstrap.servers": self.address})
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def _wait_ready(self, timeout: float, proc: subprocess.Popen | None = None) -> None:
        wait_ready(
            self._answers,
            timeout,
            proc=proc,
            interval=0.3,
            timed_out=f"the Kafka broker did not answer on {self.address} in {timeout:.0f}s",
            exited=lambda code: (
                f"the Kafka broker exited with code {code}; "
                f"see {self.dir / 'broker.out'} and {self.dir / 'server.log'}"
            ),
        )

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise Unavailable(_NO_JAVA.format(what="Java"))
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        m = re.search(r'version "(\d+)', out)
        if not m or int(m.group(1)) < 17:
            raise Unavailable(_NO_JAVA.format(what=f"Java 17 (found: {out.splitlines()[0]})"))
        return java

    def _classpath(self) -> str:
        """The broker's classpath, resolved by Maven once per pom.xml and cached."""
        key = sha256(_POM.read_bytes()).hexdigest()[:12]
        cache = self.settings.home / "kafka" / f"classpath-{key}.txt"
        if cache.exists() and all(Path(p).exists() for p in cache.read_text().split(os.pathsep)):
            return cache.read_text()
        mvn = shutil.which("mvn")
        if not mvn:
            raise Unavailable(_NO_JAVA.format(what="Maven ('mvn')"))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_POM),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={cache}",
            "-Dmdep.includeScope=runtime",
        ]
        # Offline first: after the first resolution every jar is in ~/.m2.
        for extra in (["-o"], []):
            if extra == []:
                logger.warning("resolving the Kafka %s jars from Maven Central", self.version)
            done = subprocess.run(cmd + extra, capture_output=True, text=True)
            if done.returncode == 0 and cache.exists():
                return cache.read_text()
        raise Unavailable(
            f"Maven could not resolve Kafka {self.version} from Maven Central: "
            f"{(done.stdout + done.stderr).strip()[-500:]}"
        )

    def _write_config(self) -> Path:
        s = self.settings
        host, port = s.broker_host, s.broker_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{port + 1}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.ms": "1000",
            # A stored datasource is re-read by later deployments: keep data (Kafka's own
            # default drops it after 7 days). Per topic, retention.ms still says otherwise.
            "log.retention.ms": "-1",
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _format(self, java: str, classpath: str, props: Path) -> None:
        cluster_id = uuid.uuid4().bytes
        import base64

        cid = base64.urlsafe_b64encode(cluster_id).decode().rstrip("=")
        done = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cid}",  # '=': a random id may start with '-'
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise Unavailable(f"could not format the Kafka log directory: {done.stderr[-500:]}")
