"""Conversions between the registry's protobuf messages and astro_core's CheckpointInfo."""

from __future__ import annotations

from astro_core.checkpoints import CheckpointEvent, CheckpointInfo
from astro_core.checkpoints.local import info_from_record
from services.protos.astro.v1 import common_pb2, registry_pb2
from services.registry.metadata import Entry, Event


def info_from_entry(entry: Entry) -> CheckpointInfo:
    return info_from_record(entry.name, entry.version, entry.record, entry.aliases)


def to_message(info: CheckpointInfo) -> common_pb2.Checkpoint:
    return common_pb2.Checkpoint(
        name=info.name,
        version=info.version,
        artifact_uri=info.artifact_uri,
        sha256=dict(info.sha256),
        parent_version=info.parent_version,
        stage=info.stage,
        step=info.step,
        metrics=dict(info.metrics),
        created_unix=info.created_unix,
        aliases=list(info.aliases),
    )


def from_message(message: common_pb2.Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(
        name=message.name,
        version=message.version,
        artifact_uri=message.artifact_uri,
        sha256=dict(message.sha256),
        stage=message.stage,
        parent_version=message.parent_version,
        step=message.step,
        metrics=dict(message.metrics),
        created_unix=message.created_unix,
        aliases=tuple(message.aliases),
    )


def event_message(event: Event) -> registry_pb2.CheckpointEvent:
    return registry_pb2.CheckpointEvent(
        kind=event.kind,
        checkpoint=to_message(info_from_entry(event.entry)),
        alias=event.alias,
        event_id=event.event_id,
    )


def event_from_message(message: registry_pb2.CheckpointEvent) -> CheckpointEvent:
    return CheckpointEvent(
        kind=message.kind,
        checkpoint=from_message(message.checkpoint),
        alias=message.alias,
        event_id=message.event_id,
    )
