"""Datasources: the data streams control messages announced, and re-sending one."""

from __future__ import annotations

from sqlalchemy import select

from kafkaml_ray.api.base import Service, get_row
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.ingest.control import send_control
from kafkaml_ray.schemas import DatasourceInfo
from kafkaml_ray.store import Datasource

__all__ = ["Datasources"]


class Datasources(Service):
    """Stored data streams (datasources), and re-sending one to another deployment."""

    def list(self, check: bool = True) -> list[DatasourceInfo]:
        """The stored control messages; with ``check``, each stream's ``expired`` says
        whether Kafka still holds its data (one quick query per range)."""
        with self.store.session() as s:
            rows = s.scalars(select(Datasource).order_by(Datasource.id))
            infos = [DatasourceInfo.model_validate(d) for d in rows]
        return self._with_expiry(infos) if check else infos

    def get(self, datasource_id: int, check: bool = True) -> DatasourceInfo:
        with self.store.session() as s:
            info = DatasourceInfo.model_validate(
                get_row(s, Datasource, datasource_id, "datasource")
            )
        return self._with_expiry([info])[0] if check else info

    def _with_expiry(self, infos: list[DatasourceInfo]) -> list[DatasourceInfo]:
        from kafkaml_ray.ingest.control import parse_ranges
        from kafkaml_ray.ingest.dataset import expired_streams

        streams = {  # (an online stream has no end: nothing to check)
            d.id: parse_ranges(d.topic)
            for d in infos
            if d.status != "refused" and d.topic and not d.message.get("incremental")
        }
        if not streams:
            return infos
        gone = expired_streams(self.settings.kafka_config(), streams)
        return [d.model_copy(update={"expired": gone.get(d.id)}) for d in infos]

    def resend(self, datasource_id: int, deployment_id: int) -> None:
        """Re-send a stored stream's control message to another deployment: it trains on
        the same Kafka ranges without the data being sent again."""
        ds = self.resendable(datasource_id)
        self.client.training.get(deployment_id)  # exists
        send_control(self.settings, ds.message, deployment_id)

    def resendable(self, datasource_id: int) -> DatasourceInfo:
        """The datasource, if its control message can be sent again (not refused, its
        ranges still in Kafka)."""
        ds = self.get(datasource_id)
        if ds.status == "refused" or not ds.topic:
            raise InvalidInput(f"datasource {datasource_id} was refused: nothing to re-send")
        if ds.expired:
            raise InvalidInput(f"datasource {datasource_id} has expired: {ds.expired}")
        return ds
