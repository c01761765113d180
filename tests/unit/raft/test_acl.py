"""ACLs: the authorizer against a brute-force model of Kafka's rules, then each rule by example."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.raft.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclError,
    AclFilter,
    AclIndex,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    parse_operation,
    parse_principal,
    validate_binding,
)

Op = Operation
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LITERAL, PREFIXED = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY


def acl(
    principal: str,
    permission: Permission,
    operation: Operation,
    name: str,
    *,
    resource_type: ResourceType = TOPIC,
    pattern_type: PatternType = LITERAL,
    host: str = "*",
) -> AclBinding:
    return AclBinding(principal, resource_type, pattern_type, name, operation, permission, host)


# ---- the reference model: a linear scan over every binding, written from Kafka's rules --------


def reference(
    bindings: list[AclBinding],
    principal: str,
    operation: Operation,
    resource_type: ResourceType,
    name: str,
    host: str,
) -> bool:
    def applies(b: AclBinding) -> bool:
        if b.principal not in (principal, "User:*") or b.host not in (host, "*"):
            return False
        if b.resource_type != resource_type:
            return False
        if b.pattern_type == LITERAL:
            return b.resource_name in (name, "*")
        return name.startswith(b.resource_name)

    matching = [b for b in bindings if applies(b)]
    if any(b.permission == DENY and b.operation in (operation, Op.ALL) for b in matching):
        return False
    granting = {operation, Op.ALL}
    if operation == Op.DESCRIBE:
        granting |= {Op.READ, Op.WRITE, Op.DELETE, Op.ALTER}
    if operation == Op.DESCRIBE_CONFIGS:
        granting |= {Op.ALTER_CONFIGS}
    return any(b.permission == ALLOW and b.operation in granting for b in matching)


# small alphabets, so that names, prefixes, principals and hosts collide often
NAMES = st.sampled_from(["a", "ab", "ab.c", "b", "*a"])
PRINCIPALS = st.sampled_from(["User:alice", "User:bob", "User:*"])
HOSTS = st.sampled_from(["*", "10.0.0.1", "10.0.0.2"])
# all, and the operations that imply others, come up more often than the rest
OPERATIONS = st.one_of(
    st.sampled_from([Op.ALL, Op.READ, Op.DESCRIBE, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS]),
    st.sampled_from(Operation),
)


@st.composite
def bindings(draw: st.DrawFn) -> AclBinding:
    pattern_type = draw(st.sampled_from(PatternType))
    names = NAMES if pattern_type == PREFIXED else st.one_of(NAMES, st.just("*"))
    return AclBinding(
        draw(PRINCIPALS),
        draw(st.sampled_from(ResourceType)),
        pattern_type,
        draw(names),
        draw(OPERATIONS),
        draw(st.sampled_from(Permission)),
        draw(HOSTS),
    )


Query = tuple[str, Operation, ResourceType, str, str]
QUERY_PRINCIPALS = st.sampled_from(["User:alice", "User:bob", "User:carol"])
QUERY_HOSTS = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"])


def queries(acls: list[AclBinding]) -> st.SearchStrategy[Query]:
    """Random questions, and questions aimed at a binding (its resource, principal and host),
    so that most of them meet several bindings at once."""
    anything = st.tuples(
        QUERY_PRINCIPALS,
        OPERATIONS,
        st.sampled_from(ResourceType),
        st.one_of(NAMES, st.just("abc")),
        QUERY_HOSTS,
    )
    if not acls:
        return anything

    @st.composite
    def aimed(draw: st.DrawFn) -> Query:
        b = draw(st.sampled_from(acls))
        principal = draw(QUERY_PRINCIPALS) if b.principal == "User:*" else b.principal
        name = draw(NAMES) if b.resource_name == "*" else b.resource_name
        if b.pattern_type == PREFIXED:
            name += draw(st.sampled_from(["", "a", ".x"]))
        host = draw(QUERY_HOSTS) if b.host == "*" else b.host
        operation = draw(st.one_of(st.just(b.operation), OPERATIONS))
        return principal, operation, b.resource_type, name, host

    return st.one_of(anything, aimed())


@settings(max_examples=300, deadline=None)
@given(data=st.data(), acls=st.lists(bindings(), max_size=25))
def test_the_index_agrees_with_a_linear_scan(data: st.DataObject, acls: list[AclBinding]) -> None:
    index = AclIndex(acls)
    assert len(index) == len(set(acls))
    for query in data.draw(st.lists(queries(acls), min_size=1, max_size=30)):
        expected = reference(acls, *query)
        assert index.authorize(*query) == expected, query


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(
            st.sampled_from(["User:alice", "User:*"]),
            st.sampled_from([(LITERAL, "t"), (LITERAL, "*"), (PREFIXED, "t")]),
            st.sampled_from(Operation),
            st.sampled_from(Permission),
        ),
        max_size=6,
    ),
)
def test_operations_and_permissions_on_one_resource_agree_with_a_linear_scan(
    rules: list[tuple[str, tuple[PatternType, str], Operation, Permission]],
) -> None:
    """Every binding meets the questions: only operations, permissions and implication decide."""
    acls = [
        AclBinding(who, TOPIC, pattern, name, op, permission)
        for who, (pattern, name), op, permission in rules
    ]
    index = AclIndex(acls)
    for operation in Operation:
        query = ("User:alice", operation, TOPIC, "t", "10.0.0.1")
        assert index.authorize(*query) == reference(acls, *query), operation


# ---- the rules, one by one -----------------------------------------------------------------------


def test_no_binding_means_denied() -> None:
    index = AclIndex([])
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders")
    # a binding for someone else, another resource, or another type does not help
    index = AclIndex(
        [
            acl("User:bob", ALLOW, Op.READ, "orders"),
            acl("User:alice", ALLOW, Op.READ, "payments"),
            acl("User:alice", ALLOW, Op.READ, "orders", resource_type=GROUP),
        ]
    )
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders")


def test_deny_wins_over_allow() -> None:
    index = AclIndex(
        [
            acl("User:*", ALLOW, Op.ALL, "*"),
            acl("User:alice", DENY, Op.WRITE, "orders"),
        ]
    )
    assert not index.authorize("User:alice", Op.WRITE, TOPIC, "orders")
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders")
    assert index.authorize("User:bob", Op.WRITE, TOPIC, "orders")
    assert index.authorize("User:alice", Op.WRITE, TOPIC, "payments")


def test_deny_of_all_denies_every_operation() -> None:
    index = AclIndex(
        [
            acl("User:alice", ALLOW, Op.READ, "orders"),
            acl("User:alice", ALLOW, Op.DESCRIBE, "orders"),
            acl("User:alice", DENY, Op.ALL, "orders", pattern_type=PREFIXED),
        ]
    )
    for operation in Operation:
        assert not index.authorize("User:alice", operation, TOPIC, "orders")


def test_allow_of_all_allows_every_operation() -> None:
    index = AclIndex([acl("User:alice", ALLOW, Op.ALL, "orders")])
    for operation in Operation:
        assert index.authorize("User:alice", operation, TOPIC, "orders")


@pytest.mark.parametrize("granted", [Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.DESCRIBE])
def test_read_write_delete_and_alter_imply_describe(granted: Operation) -> None:
    index = AclIndex([acl("User:alice", ALLOW, granted, "orders")])
    assert index.authorize("User:alice", Op.DESCRIBE, TOPIC, "orders")
    others = {Op.READ, Op.WRITE, Op.DELETE, Op.ALTER} - {granted}
    assert not any(index.authorize("User:alice", op, TOPIC, "orders") for op in others)


def test_alter_configs_implies_describe_configs_and_not_the_reverse() -> None:
    index = AclIndex([acl("User:alice", ALLOW, Op.ALTER_CONFIGS, "orders")])
    assert index.authorize("User:alice", Op.DESCRIBE_CONFIGS, TOPIC, "orders")
    index = AclIndex([acl("User:alice", ALLOW, Op.DESCRIBE_CONFIGS, "orders")])
    assert not index.authorize("User:alice", Op.ALTER_CONFIGS, TOPIC, "orders")
    # describe does not imply anything, nor does describe_configs imply describe
    assert not index.authorize("User:alice", Op.DESCRIBE, TOPIC, "orders")


def test_implication_is_for_allows_only() -> None:
    # Kafka: a deny of read does not deny describe; only a deny of describe (or all) does
    index = AclIndex(
        [acl("User:alice", ALLOW, Op.READ, "orders"), acl("User:alice", DENY, Op.READ, "orders")]
    )
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders")
    assert index.authorize("User:alice", Op.DESCRIBE, TOPIC, "orders")
    index = AclIndex(
        [
            acl("User:alice", ALLOW, Op.READ, "orders"),
            acl("User:alice", DENY, Op.DESCRIBE, "orders"),
        ]
    )
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders")
    assert not index.authorize("User:alice", Op.DESCRIBE, TOPIC, "orders")


def test_prefixed_matches_names_that_start_with_it_and_literal_only_its_name() -> None:
    index = AclIndex(
        [
            acl("User:alice", ALLOW, Op.READ, "orders.", pattern_type=PREFIXED),
            acl("User:alice", ALLOW, Op.WRITE, "orders.eu"),
        ]
    )
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders.eu")
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders.")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "xorders.eu")
    assert index.authorize("User:alice", Op.WRITE, TOPIC, "orders.eu")
    assert not index.authorize("User:alice", Op.WRITE, TOPIC, "orders.eu.2")


def test_prefixes_of_several_lengths_are_all_looked_at() -> None:
    index = AclIndex(
        [
            acl("User:alice", ALLOW, Op.READ, "o", pattern_type=PREFIXED),
            acl("User:alice", DENY, Op.READ, "orders.e", pattern_type=PREFIXED),
            acl("User:alice", ALLOW, Op.WRITE, "orders.eu.west", pattern_type=PREFIXED),
        ]
    )
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders.us")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders.eu")
    assert index.authorize("User:alice", Op.WRITE, TOPIC, "orders.eu.west.1")
    assert not index.authorize("User:alice", Op.WRITE, TOPIC, "orders.eu")


def test_literal_star_names_every_resource_of_its_type_only() -> None:
    index = AclIndex([acl("User:alice", ALLOW, Op.READ, "*", resource_type=GROUP)])
    assert index.authorize("User:alice", Op.READ, GROUP, "any-group")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "any-topic")


def test_wildcard_principal_applies_to_everyone_and_its_deny_too() -> None:
    index = AclIndex(
        [
            acl("User:*", ALLOW, Op.READ, "public"),
            acl("User:alice", ALLOW, Op.READ, "secret"),
            acl("User:*", DENY, Op.READ, "secret"),
        ]
    )
    assert index.authorize("User:bob", Op.READ, TOPIC, "public")
    assert index.authorize("User:alice", Op.READ, TOPIC, "public")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "secret")


def test_host_must_match_or_be_the_wildcard() -> None:
    index = AclIndex(
        [
            acl("User:alice", ALLOW, Op.READ, "orders", host="10.0.0.1"),
            acl("User:alice", ALLOW, Op.WRITE, "orders"),
            acl("User:alice", DENY, Op.WRITE, "orders", host="10.0.0.9"),
        ]
    )
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders", "10.0.0.1")
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders", "10.0.0.2")
    assert index.authorize("User:alice", Op.WRITE, TOPIC, "orders", "10.0.0.2")
    assert not index.authorize("User:alice", Op.WRITE, TOPIC, "orders", "10.0.0.9")
    # an unknown host ("*") meets only the bindings for every host, as in Kafka
    assert not index.authorize("User:alice", Op.READ, TOPIC, "orders")
    assert index.authorize("User:alice", Op.WRITE, TOPIC, "orders")


def test_the_module_docstring_example() -> None:
    index = AclIndex(
        [
            acl("User:*", ALLOW, Op.READ, "orders.", pattern_type=PREFIXED),
            acl("User:bob", DENY, Op.ALL, "orders.eu"),
        ]
    )
    assert index.authorize("User:alice", Op.READ, TOPIC, "orders.eu")
    assert index.authorize("User:alice", Op.DESCRIBE, TOPIC, "orders.eu")
    assert not index.authorize("User:alice", Op.WRITE, TOPIC, "orders.eu")
    assert index.authorize("User:bob", Op.READ, TOPIC, "orders.us")
    assert not any(index.authorize("User:bob", op, TOPIC, "orders.eu") for op in Operation)


def test_cluster_operations() -> None:
    index = AclIndex(
        [
            acl("User:ops", ALLOW, Op.CREATE, CLUSTER_NAME, resource_type=CLUSTER),
            acl("User:app", ALLOW, Op.IDEMPOTENT_WRITE, CLUSTER_NAME, resource_type=CLUSTER),
        ]
    )
    assert index.authorize("User:ops", Op.CREATE, CLUSTER, CLUSTER_NAME)
    assert not index.authorize("User:ops", Op.DESCRIBE, CLUSTER, CLUSTER_NAME)
    assert index.authorize("User:app", Op.IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME)
    assert not index.authorize("User:app", Op.CREATE, CLUSTER, CLUSTER_NAME)


# ---- validation ----------------------------------------------------------------------------------


def test_valid_bindings_pass() -> None:
    for binding in (
        acl("User:alice", ALLOW, Op.READ, "orders"),
        acl("User:*", DENY, Op.ALL, "*"),
        acl("User:CN=app,O=corp", ALLOW, Op.WRITE, "orders.", pattern_type=PREFIXED),
        acl("User:alice", ALLOW, Op.READ, "my group/1", resource_type=GROUP),
        acl("User:alice", ALLOW, Op.CLUSTER_ACTION, CLUSTER_NAME, resource_type=CLUSTER),
        acl("User:alice", ALLOW, Op.READ, "orders", host="2001:db8::1"),
    ):
        validate_binding(binding)


@pytest.mark.parametrize(
    ("binding", "fragment"),
    [
        (acl("alice", ALLOW, Op.READ, "t"), "User:<name>"),
        (acl("Group:ops", ALLOW, Op.READ, "t"), "User:<name>"),
        (acl("User:", ALLOW, Op.READ, "t"), "names nobody"),
        (acl("User:" + "a" * 252, ALLOW, Op.READ, "t"), "longer than 256"),
        (acl("User:a\n", ALLOW, Op.READ, "t"), "unprintable"),
        (acl("User:a", ALLOW, Op.READ, ""), "empty resource name"),
        (acl("User:a", ALLOW, Op.READ, "t" * 250), "longer than 249"),
        (acl("User:a", ALLOW, Op.READ, "*", pattern_type=PREFIXED), "not a prefix"),
        (acl("User:a", ALLOW, Op.READ, "orders/eu"), "[A-Za-z0-9._-]"),
        (acl("User:a", ALLOW, Op.ALTER, CLUSTER_NAME + "2", resource_type=CLUSTER), "cluster"),
        (acl("User:a", ALLOW, Op.ALTER, "*", resource_type=CLUSTER), "cluster"),
        (
            acl("User:a", ALLOW, Op.ALTER, "kafka", resource_type=CLUSTER, pattern_type=PREFIXED),
            "cluster",
        ),
        (acl("User:a", ALLOW, Op.WRITE, "g", resource_type=GROUP), "does not apply to a group"),
        (acl("User:a", ALLOW, Op.IDEMPOTENT_WRITE, "t"), "does not apply to a topic"),
        (
            acl("User:a", ALLOW, Op.READ, CLUSTER_NAME, resource_type=CLUSTER),
            "does not apply to a cluster",
        ),
        (acl("User:a", ALLOW, Op.READ, "t", host=""), "host"),
        (acl("User:a", ALLOW, Op.READ, "t", host="10.0.0.1 "), "spaces"),
    ],
)
def test_invalid_bindings_are_refused_with_a_reason(binding: AclBinding, fragment: str) -> None:
    with pytest.raises(AclError, match=fragment.replace("[", r"\[").replace("*", r"\*")):
        validate_binding(binding)


# ---- plain maps (commands, snapshot) and parsing -----------------------------------------------


@given(bindings())
def test_binding_round_trips_through_its_map(binding: AclBinding) -> None:
    data = binding.to_dict()
    assert all(type(v) is str for v in data.values())  # plain strings, not enum members
    assert AclBinding.from_dict(data) == binding


def test_binding_map_without_host_means_every_host() -> None:
    data = acl("User:a", ALLOW, Op.READ, "t", host="h").to_dict()
    del data["host"]
    assert AclBinding.from_dict(data).host == "*"


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        "User:a",
        {},
        {**acl("User:a", ALLOW, Op.READ, "t").to_dict(), "extra": "x"},
        {**acl("User:a", ALLOW, Op.READ, "t").to_dict(), "operation": "fly"},
        {**acl("User:a", ALLOW, Op.READ, "t").to_dict(), "operation": 3},
        {**acl("User:a", ALLOW, Op.READ, "t").to_dict(), "principal": ["User:a"]},
        {**acl("User:a", ALLOW, Op.READ, "t").to_dict(), "resource_type": ["topic"]},
    ],
)
def test_a_map_that_is_not_a_binding_is_an_acl_error(garbage: Any) -> None:
    with pytest.raises(AclError):
        AclBinding.from_dict(garbage)


def test_filter_matches_on_the_fields_it_sets() -> None:
    binding = acl("User:alice", ALLOW, Op.READ, "orders")
    assert AclFilter().matches(binding)
    assert AclFilter(principal="User:alice", operation=Op.READ).matches(binding)
    assert not AclFilter(principal="User:alice", operation=Op.WRITE).matches(binding)
    assert not AclFilter(resource_name="ord", pattern_type=PREFIXED).matches(binding)
    assert not AclFilter(host="10.0.0.1").matches(binding)
    # exact, not pattern-matching: the filter for principal User:* selects the User:* bindings
    assert not AclFilter(principal="User:*").matches(binding)


def test_filter_round_trips_and_leaves_out_what_it_does_not_set() -> None:
    fil = AclFilter(resource_type=TOPIC, permission=DENY)
    assert fil.to_dict() == {"resource_type": "topic", "permission": "deny"}
    assert AclFilter.from_dict(fil.to_dict()) == fil
    assert AclFilter.from_dict({}) == AclFilter()
    with pytest.raises(AclError):
        AclFilter.from_dict({"permission": "maybe"})


def test_parse_principal() -> None:
    assert parse_principal(" User:alice ") == "User:alice"
    assert parse_principal("User:*") == "User:*"
    for bad in ("alice", "user:alice", "User:", ""):
        with pytest.raises(AclError):
            parse_principal(bad)


def test_parse_operation_takes_kafkas_spellings() -> None:
    for text in ("ClusterAction", "CLUSTER_ACTION", "cluster-action", "cluster_action"):
        assert parse_operation(text) is Op.CLUSTER_ACTION
    assert parse_operation("Read") is Op.READ
    assert parse_operation("IdempotentWrite") is Op.IDEMPOTENT_WRITE
    with pytest.raises(AclError, match="unknown operation"):
        parse_operation("fly")
