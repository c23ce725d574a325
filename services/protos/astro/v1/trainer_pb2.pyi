from services.protos.astro.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainJobSpec(_message.Message):
    __slots__ = ("run_id", "stage", "base_model", "dataset_uri", "config_yaml", "output_name", "generator_address", "verifier_address", "registry_address", "output_dir")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_URI_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    base_model: _common_pb2.ModelRef
    dataset_uri: str
    config_yaml: str
    output_name: str
    generator_address: str
    verifier_address: str
    registry_address: str
    output_dir: str
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., base_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dataset_uri: _Optional[str] = ..., config_yaml: _Optional[str] = ..., output_name: _Optional[str] = ..., generator_address: _Optional[str] = ..., verifier_address: _Optional[str] = ..., registry_address: _Optional[str] = ..., output_dir: _Optional[str] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("run_id", "stage", "step", "total_steps", "metrics", "checkpoint")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    step: int
    total_steps: int
    metrics: _containers.ScalarMap[str, float]
    checkpoint: _common_pb2.Checkpoint
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ...) -> None: ...
