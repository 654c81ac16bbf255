"""A cost limit for GraphQL documents, checked before anything runs.

Cost = for every list field, its ``first`` (default 100; a variable counts as the maximum, 1000)
times the rows of the lists around it, plus one per object a relation loads per row. One page of
1000 trades with ``pool { token0 { symbol } }`` costs 1000 + 1000 + 1000; a document over
``MAX_COST`` is refused with a message saying its cost and the limit.
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphql import FieldNode, GraphQLError, IntValueNode, OperationDefinitionNode, ValidationRule
from strawberry.extensions import AddValidationRules

MAX_COST = 10_000
DEFAULT_FIRST = 100
MAX_FIRST = 1000


def _first(node: FieldNode) -> int | None:
    """The rows a list field can return, None for a non-list field."""
    for arg in node.arguments or ():
        if arg.name.value == "first":
            return int(arg.value.value) if isinstance(arg.value, IntValueNode) else MAX_FIRST
    return None


def _is_list(node: FieldNode, list_fields: set[str]) -> bool:
    return node.name.value in list_fields


def _cost(selections: Any, multiplier: int, list_fields: set[str]) -> int:
    total = 0
    for node in selections or ():
        if not isinstance(node, FieldNode) or node.selection_set is None:
            continue
        if _is_list(node, list_fields):
            first = _first(node)
            rows = multiplier * (DEFAULT_FIRST if first is None else max(first, 1))
        else:
            rows = multiplier
        total += rows + _cost(node.selection_set.selections, rows, list_fields)
    return total


class _CostRule(ValidationRule):
    list_fields: ClassVar[set[str]] = set()

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        cost = _cost(node.selection_set.selections if node.selection_set else (), 1, self.list_fields)
        if cost > MAX_COST:
            self.report_error(
                GraphQLError(
                    f"query cost {cost} exceeds the limit of {MAX_COST}: ask for fewer rows (first) or"
                    " fewer nested objects, and page with after",
                    node,
                )
            )


def cost_limit(list_fields: set[str]) -> AddValidationRules:
    rule = type("CostRule", (_CostRule,), {"list_fields": set(list_fields)})
    return AddValidationRules([rule])
