from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardMapping(_message.Message):
    __slots__ = ("correct", "incorrect")
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    INCORRECT_FIELD_NUMBER: _ClassVar[int]
    correct: float
    incorrect: float
    def __init__(self, correct: _Optional[float] = ..., incorrect: _Optional[float] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("response", "gold", "problem", "rewards")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    GOLD_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    response: str
    gold: str
    problem: str
    rewards: RewardMapping
    def __init__(self, response: _Optional[str] = ..., gold: _Optional[str] = ..., problem: _Optional[str] = ..., rewards: _Optional[_Union[RewardMapping, _Mapping]] = ...) -> None: ...

class VerifyResult(_message.Message):
    __slots__ = ("correct", "reward", "extracted_answer", "reason")
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    correct: bool
    reward: float
    extracted_answer: str
    reason: str
    def __init__(self, correct: _Optional[bool] = ..., reward: _Optional[float] = ..., extracted_answer: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VerifyBatchRequest(_message.Message):
    __slots__ = ("items", "rewards")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[VerifyRequest]
    rewards: RewardMapping
    def __init__(self, items: _Optional[_Iterable[_Union[VerifyRequest, _Mapping]]] = ..., rewards: _Optional[_Union[RewardMapping, _Mapping]] = ...) -> None: ...

class VerifyBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifyResult, _Mapping]]] = ...) -> None: ...
