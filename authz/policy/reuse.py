"""What a rebuild may take over from the last one (issue 11, item 17).

A rebuild after one edit should cost one object's compile, and a token verified by an
issuer that did not change should stay in the verified-token cache: the request path
counts a cached token only while the policy trusts the very issuer object (and key set)
that verified it. So an issuer compiled again with equal settings and the same keys is
replaced by the previous object, and a policy whose version and named issuer objects are
unchanged keeps its previous compile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from authz.keys.provider import KeyProvider, StaticKeys
from authz.policy.compile import PolicyResult, compile_policy, issuer_keys
from authz.policy.compile_login import reads_files
from authz.policy.issuer import CompiledIssuer
from authz.policy.validate import PolicyObject

# A policy's compile: the version compiled, the issuer objects it named then, the result.
PolicyCompile = tuple[PolicyObject, tuple[CompiledIssuer | None, ...], PolicyResult]
Workload = tuple[Mapping[str, str], str | None]  # labels, namespace


def same_issuer(old: CompiledIssuer, new: CompiledIssuer) -> bool:
    """Equal settings and the same key material: a token verified by `old` verifies by `new`."""
    return dataclasses.replace(new, keys=old.keys) == old and _same_keys(old.keys, new.keys)


def _same_keys(old: KeyProvider, new: KeyProvider) -> bool:
    """A remote source is kept by the key manager (the same object); fixed keys are the same
    when their key sets are equal (a key file rewritten with the same keys)."""
    if old is new:
        return True
    if not (isinstance(old, StaticKeys) and isinstance(new, StaticKeys)):
        return False
    before, after = old.state(), new.state()
    same_origin = (before.source, before.warnings) == (after.source, after.warnings)
    return same_origin and old.current() == new.current()


def compile_policy_again(
    obj: PolicyObject,
    issuers: Mapping[str, CompiledIssuer],
    workload: Workload,
    previous: PolicyCompile | None,
) -> PolicyCompile:
    """`previous` when it compiled this version against the same issuer objects, else a
    fresh compile (raises CompileError). A policy whose login block names files is compiled
    again: a key ring or client secret file may have changed while the object did not."""
    named = tuple(issuers.get(k) for k in issuer_keys(obj))
    if previous is not None and not reads_files(obj):
        before, named_before, _result = previous
        same_issuers = len(named) == len(named_before) and all(
            a is b for a, b in zip(named, named_before, strict=True)
        )
        if same_issuers and dataclasses.replace(before, generation=obj.generation) == obj:
            return previous
    return obj, named, compile_policy(obj, issuers, workload[0], workload[1])
