"""BusOptions is the one list of options: open_ivy_bus takes them as they are.

``open_ivy_bus(agent_name, bus, *, on_die, **options)`` passes its keyword
options to :class:`trivy.BusOptions`; the ``BusOptionsArgs`` TypedDict
only tells type checkers their names and types, and must say what
BusOptions accepts, no more, no less.
"""

from __future__ import annotations

import inspect
import typing

import attrs
import pytest

import trivy
from trivy._options import OPTION_NAMES, BusOptions, BusOptionsArgs

#: The fields open_ivy_bus takes as positional arguments.
POSITIONAL = ("agent_name", "bus")


def _accepted_type(field: attrs.Attribute[object]) -> object:
    """The type BusOptions accepts for ``field``: its converter's input, or its own."""
    if field.converter is not None:
        hints = typing.get_type_hints(field.converter)
        first = next(iter(inspect.signature(field.converter).parameters))
        return hints[first]
    hints = typing.get_type_hints(BusOptions)
    return hints[field.name]


def test_the_typed_dict_names_every_option_with_the_type_bus_options_accepts() -> None:
    fields = {f.name: f for f in attrs.fields(BusOptions) if f.name not in POSITIONAL}
    typed = typing.get_type_hints(BusOptionsArgs)
    assert list(typed) == list(fields)  # same names, same order
    for name, field in fields.items():
        assert typed[name] == _accepted_type(field), name
    assert BusOptionsArgs.__required_keys__ == frozenset()  # each has BusOptions' default
    assert all(f.default is not attrs.NOTHING for f in fields.values())
    assert frozenset(fields) == OPTION_NAMES


def test_open_ivy_bus_takes_the_positional_fields_by_name() -> None:
    parameters = inspect.signature(trivy.open_ivy_bus).parameters
    assert [name for name in parameters if name in POSITIONAL] == list(POSITIONAL)
    assert [f.name for f in attrs.fields(BusOptions)][:2] == list(POSITIONAL)


async def test_an_unknown_option_is_a_type_error_naming_it(bus: str) -> None:
    with pytest.raises(TypeError, match=r"^open_ivy_bus\(\) got an unexpected keyword .*'hots'"):
        trivy.open_ivy_bus("A", bus, hots="127.0.0.1")  # type: ignore[call-arg]


async def test_options_reach_the_bus_and_the_rest_keep_their_defaults(bus: str) -> None:
    async with trivy.open_ivy_bus(
        "A", bus, host="127.0.0.1", send_to_self=True, message_classes="TRACK,ALARM"
    ) as ivy:
        expected = BusOptions(
            agent_name="A",
            bus=bus,
            host="127.0.0.1",
            send_to_self=True,
            message_classes=("TRACK", "ALARM"),
        )
        assert ivy.options == expected
