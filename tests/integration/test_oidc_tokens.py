"""Bearer JWTs from a real OpenID provider (npm's oidc-provider, started by the suite) checked
against its JWKS: who is accepted, with which roles, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from tests.conftest import free_port
from tests.oidc_provider import (
    API_AUDIENCE,
    CLIENT_SECRET,
    NO_ROLE,
    OPERATOR,
    OTHER_CLIENT_ID,
    RADIOLOGIST,
    SHORT_LIVED_CLIENT_ID,
    Provider,
    code_flow_tokens,
    running_provider,
)
from tools.identity.oidc import OidcConfig, OidcError, OidcVerifier, roles_from_claims

pytestmark = pytest.mark.integration


def verifier_for(provider: Provider, **overrides: object) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=provider.issuer, audience=API_AUDIENCE, **overrides))  # type: ignore[arg-type]


def access_token(provider: Provider, user: object, client_id: str | None = None) -> str:
    kwargs = {"client_id": client_id} if client_id else {}
    return str(code_flow_tokens(provider, user, **kwargs)["access_token"])  # type: ignore[arg-type]


def test_radiologist_token_gives_the_principal(oidc_provider: Provider) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    principal = verifier_for(oidc_provider).principal(access_token(oidc_provider, RADIOLOGIST))
    assert principal.id == RADIOLOGIST.username
    assert principal.display_name == RADIOLOGIST.name
    assert principal.issuer == oidc_provider.issuer
    assert principal.roles == frozenset({"radiologist"})
    assert principal.auth_method == "oidc"
    assert before <= principal.auth_time <= datetime.now(UTC) + timedelta(seconds=5)


def test_operator_token_carries_only_the_operator_role(oidc_provider: Provider) -> None:
    principal = verifier_for(oidc_provider).principal(access_token(oidc_provider, OPERATOR))
    assert principal.roles == frozenset({"operator"})
    assert not principal.has_role("radiologist")


def test_expired_token_is_refused(oidc_provider: Provider) -> None:
    token = access_token(oidc_provider, RADIOLOGIST, client_id=SHORT_LIVED_CLIENT_ID)  # lives 1 s
    verifier = verifier_for(oidc_provider, leeway_s=0)
    time.sleep(2.5)
    with pytest.raises(OidcError, match="expired"):
        verifier.principal(token)


def test_token_for_another_audience_is_refused(oidc_provider: Provider) -> None:
    token = access_token(oidc_provider, RADIOLOGIST, client_id=OTHER_CLIENT_ID)
    with pytest.raises(OidcError, match="'aud'"):
        verifier_for(oidc_provider).principal(token)


def test_id_token_is_not_an_access_token(oidc_provider: Provider) -> None:
    id_token = str(code_flow_tokens(oidc_provider, RADIOLOGIST)["id_token"])  # aud: the client id
    with pytest.raises(OidcError, match="'aud'"):
        verifier_for(oidc_provider).principal(id_token)


@pytest.fixture(scope="module")
def twin_provider(oidc_provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A second provider at another issuer that signs with the very same key."""
    with running_provider(
        tmp_path_factory.mktemp("oidc-twin"), free_port(), oidc_provider.redirect_uri, jwks_file=oidc_provider.jwks_file
    ) as twin:
        yield twin


def test_token_from_another_issuer_is_refused_even_with_the_same_key(
    oidc_provider: Provider, twin_provider: Provider
) -> None:
    token = access_token(twin_provider, RADIOLOGIST)
    # the signature alone would pass: the twin signs with the same key
    assert verifier_for(twin_provider).principal(token).issuer == twin_provider.issuer
    with pytest.raises(OidcError, match="'iss'"):
        verifier_for(oidc_provider).principal(token)


def test_token_without_a_role_is_refused(oidc_provider: Provider) -> None:
    with pytest.raises(OidcError, match="holds none of the roles"):
        verifier_for(oidc_provider).principal(access_token(oidc_provider, NO_ROLE))


def test_roles_claim_is_configurable(oidc_provider: Provider) -> None:
    token = access_token(oidc_provider, RADIOLOGIST)
    with pytest.raises(OidcError, match="'groups' claim"):
        verifier_for(oidc_provider, roles_claim="groups").principal(token)
    assert roles_from_claims({"realm_access": {"roles": ["radiologist", "offline_access"]}}, "realm_access.roles") == {
        "radiologist"
    }


def test_forged_tokens_are_refused(oidc_provider: Provider) -> None:
    """Claims copied from a real token, signed by anyone but the provider."""
    payload = access_token(oidc_provider, RADIOLOGIST).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    foreign_key = RSAKey.generate_key(2048, parameters={"kid": "test-signing-key"})
    forged_rsa = jwt.encode({"alg": "RS256", "kid": "test-signing-key"}, claims, foreign_key)
    # HS256 with the client secret: whoever holds the secret could mint tokens if HMAC were accepted
    forged_hmac = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET), algorithms=["HS256"])
    verifier = verifier_for(oidc_provider)
    for forged in (forged_rsa, forged_hmac, "not-a-jwt"):
        with pytest.raises(OidcError):
            verifier.principal(forged)
