"""Login: the greeting, authentication, the backend check, and COM_CHANGE_USER.

Theory of operation: `Login.run` is the connection phase of a client session, a coroutine (it is not
the hot path). It sends HandshakeV10 advertising the writer's real version and collation, reads
HandshakeResponse41 within [proxy] handshake_timeout, authenticates the user against the config (the
account's plugin decides, as in MySQL: mysql_native_password or caching_sha2_password, with an
AuthSwitchRequest when the client tried another), counts the session against the limits, makes the
session that user (`ClientSession.become`) and checks that the writer takes it (so a bad schema or
backend login fails at connect time, as it would against the server), and only then says OK.
COM_CHANGE_USER runs the same authentication and backend check; a refused change leaves the session
the old user in its schema, with the rest of its state reset and the server's default character
set, as MariaDB 10.11 does.

TLS (proxy.tls): with [tls] on, the greeting offers CLIENT_SSL; a client's SSLRequest switches the
connection to TLS (`ClientSession.transport` becomes the TLS transport, the session object stays)
and its full HandshakeResponse41 arrives inside. A [[users]] require_ssl account logging in without
TLS gets ERR 1045, as MariaDB answers an account created with REQUIRE SSL.

caching_sha2_password: the fast path (a token checked against SHA256(SHA256(password))) whenever
the proxy can compute that check -- from the clear password, or from an earlier full authentication
of the account (`host.sha2_checks`, the server's cache). An account stored only as a hash needs one
full authentication: the client sends its password in clear over TLS, or RSA-encrypted with the
proxy's public key without TLS (sent on request, AuthMoreData 0x02).

Client limits, as the server would enforce them: over [proxy] max_connections the client is told
ERR 1040 where it awaits its authentication result; a user over its [[users]] max_connections gets
ERR 1203 once authenticated. Wrong passwords get ERR 1045; a handshake that does not complete in time
ERR 1159; a malformed one ERR 1043. Passwords are never logged.

While login runs, client bytes are only buffered (ClientSession.data_received wakes `read_packet`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from typing import Protocol

from . import tls
from .config import User
from .interfaces import SessionCore
from .lending import BackendLending, HostgroupError
from .logsafe import LogLimiter
from .protocol import auth
from .protocol.constants import (
    CACHING_SHA2_FAST_AUTH_OK,
    CACHING_SHA2_FULL_AUTH,
    CACHING_SHA2_PASSWORD,
    CACHING_SHA2_REQUEST_PUBLIC_KEY,
    MARIADB_SHIFT,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    PROXY_MARIADB_CAPABILITIES,
    Capability,
    ErrorCode,
    ServerStatus,
)
from .protocol.framing import Packet, PacketFramer, ProtocolError
from .protocol.packets import (
    OK,
    AuthSwitchRequest,
    HandshakeV10,
    is_ssl_request,
    make_auth_switch,
    make_handshake_v10,
    make_ok,
    parse_change_user,
    parse_handshake_response,
)

log = logging.getLogger("rwproxy.session")
_limited = LogLimiter(log)  # failed logins: one line per address, then a count


class LoginTarget(SessionCore, Protocol):
    """The session logging in (proxy.client.ClientSession)."""

    framer: PacketFramer  # client bytes, buffered while the session logs in
    transport: asyncio.Transport  # replaced by the TLS transport after an SSLRequest
    secure: bool  # the connection is TLS
    peer: str
    client_ip: str | None
    admitted: bool  # within [proxy] max_connections
    logged_in: bool
    counted_user: str | None  # the user this session counts against
    lending: BackendLending

    def context(self) -> str: ...
    def negotiated(self, capabilities: int, collation: int, attributes: dict[str, str]) -> None: ...
    def become(self, user: User, database: str | None) -> None: ...


class Login:
    __slots__ = ("session", "scramble", "_waiter")

    def __init__(self, session: LoginTarget) -> None:
        self.session = session
        self.scramble = auth.new_scramble()
        self._waiter: asyncio.Future | None = None

    # ---- reading whole packets while the session is busy logging in ---------------------------

    def wake(self) -> None:
        """Client bytes arrived (or the client went away): `read_packet` looks again."""
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_packet(self, timeout: float) -> Packet:
        """The next whole client packet, or TimeoutError / ConnectionError."""
        s = self.session
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pkt = s.framer.next_packet()
            if pkt is not None:
                return pkt
            if s.closed:
                raise ConnectionResetError("client closed the connection")
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, deadline - loop.time())
            finally:
                self._waiter = None

    # ---- connection phase ---------------------------------------------------------------------

    async def run(self) -> None:
        s = self.session
        try:
            await self._handshake()
        except asyncio.TimeoutError:
            _limited.log(logging.WARNING, ("handshake timeout", s.client_ip), "%s handshake timeout after %gs", s.context(), s.host.config.handshake_timeout)
            s.send_err(2, ErrorCode.NET_READ_INTERRUPTED, "Got timeout reading communication packets (handshake not completed in time)")
            s.close()
        except ConnectionError:
            s.log(logging.INFO, "client closed the connection during the handshake")
            s.close()
        except ProtocolError as e:
            _limited.log(logging.WARNING, ("bad handshake", s.client_ip), "%s bad handshake: %s", s.context(), e)
            s.send_err(2, ErrorCode.HANDSHAKE_ERROR, f"Bad handshake: {e}")
            s.close()
        except Exception:
            log.exception("%s unexpected error during the handshake", s.context())
            s.close()

    async def _handshake(self) -> None:
        s = self.session
        host = s.host
        context = host.tls.context
        # MariaDB's extended capabilities the writer offers and the proxy can relay: offered as a
        # MariaDB server does, with CLIENT_MYSQL (bit 0) clear. The backend connections mirror the
        # client's choice (part of the pool key).
        ext = host.mariadb_capabilities & PROXY_MARIADB_CAPABILITIES
        hs = HandshakeV10(
            server_version=host.server_version,
            connection_id=s.id & 0xFFFFFFFF,
            auth_data=self.scramble,
            capabilities=(PROXY_CAPABILITIES & ~Capability.LONG_PASSWORD if ext else PROXY_CAPABILITIES) | (Capability.SSL if context is not None else 0),
            collation=host.collation,
            status=ServerStatus.AUTOCOMMIT,
            auth_plugin=NATIVE_PASSWORD,
            mariadb_capabilities=ext,
        )
        s.send(make_handshake_v10(hs), 0)
        timeout = host.config.handshake_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pkt = await self.read_packet(timeout)
        if pkt.seq == 1 and is_ssl_request(pkt.payload):
            if context is None:
                raise ProtocolError("SSL was requested but the proxy did not offer it", code=ErrorCode.HANDSHAKE_ERROR)
            if not await self._start_tls(context, max(0.001, deadline - loop.time())):
                return
            pkt = await self.read_packet(max(0.001, deadline - loop.time()))
        if not host.count_client(s):
            # MySQL sends this ERR in place of the greeting; here it comes where the client awaits
            # its authentication result, which every client reports faithfully (MariaDB's
            # Connector/C, which wants TLS by default, reports an ERR before the greeting as
            # CR_CONNECTION_ERROR 2002 "Received error packet before completion of TLS handshake").
            # A connection that never answers the greeting does not count (proxy.app handshake caps).
            _limited.log(logging.WARNING, "max_connections", "%s too many connections (max_connections = %d): refused", s.context(), host.config.max_connections)
            s.send_err(pkt.seq + 1, ErrorCode.CON_COUNT_ERROR, "Too many connections")
            s.close()
            return
        expected = 2 if s.secure else 1  # after an SSLRequest (1) the response inside TLS is 2
        if pkt.seq != expected:
            raise ProtocolError(f"Got packets out of order (expected sequence id {expected}, got {pkt.seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER)
        resp = parse_handshake_response(pkt.payload, tls=s.secure)
        s.username = resp.username
        s.negotiated(resp.capabilities & PROXY_CAPABILITIES | (resp.mariadb_capabilities & ext) << MARIADB_SHIFT, resp.collation, resp.attributes)
        seq = pkt.seq + 1
        user, seq = await self._authenticate(resp.username, resp.auth_plugin, resp.auth_response, seq, timeout)
        if user is None or not self._count_user(user, seq):
            s.close()
            return
        if not await self._login_backend(user, resp.database, seq):
            s.close()
            return
        s.send(make_ok(OK(status=s.status), s.capabilities), seq)
        s.log(logging.DEBUG, "logged in")
        s.logged_in = True
        host.handshake_over(s)
        s.free()

    async def _start_tls(self, context: ssl.SSLContext, timeout: float) -> bool:
        """The client sent an SSLRequest: TLS from here on. False (session closed) if the TLS
        handshake fails; the client is not told in plaintext, it is expecting TLS."""
        s = self.session
        try:
            s.transport = await tls.accept(s.transport, s, context, s.framer.take_rest(), timeout)
        except (ssl.SSLError, OSError) as e:
            address = s.client_ip or "?"
            _limited.log(logging.INFO, ("tls", address), "%s %s", s.context(), tls.describe_failure(e))
            s.close()
            return False
        s.secure = True
        return not s.closed

    async def _authenticate(self, username: str, plugin: str, token: bytes, seq: int, timeout: float) -> tuple[User | None, int]:
        """Verify the client; on failure send ERR 1045. Returns (user or None, next sequence id)."""
        s = self.session
        throttle = s.host.throttle
        if throttle.account_blocked(username):
            s.log(logging.WARNING, "login refused: the account is blocked after %d failed logins", s.host.config.max_password_errors)
            s.send_err(seq, ErrorCode.USER_IS_BLOCKED, f"User is blocked because of too many credential errors; it is unblocked after host_block_time ({s.host.config.host_block_time:g}s)")
            return None, seq
        user = s.host.config.users.get(username)
        if user is not None and plugin != user.auth_plugin:
            # As MySQL does, the account's plugin decides: a client that tried another one is
            # asked to switch (AuthSwitchRequest with a fresh scramble).
            plugin = user.auth_plugin
            self.scramble = auth.new_scramble()
            s.send(make_auth_switch(AuthSwitchRequest(plugin, self.scramble)), seq)
            pkt = await self.read_packet(timeout)
            token, seq = bytes(pkt.payload), pkt.seq + 1
        address = s.client_ip or "?"
        using = "YES" if token not in (b"", b"\0") else "NO"
        full = False  # a caching_sha2 full authentication ran (its OK comes without "fast auth OK")
        if user is not None and plugin == CACHING_SHA2_PASSWORD and auth.is_native_hash(user.password) and using == "YES":
            ok, seq, full = await self._caching_sha2_hashed(user, token, seq, timeout)
            if ok is None:  # a require_ssl account in plaintext: not a wrong password
                return self._refuse_plaintext(user, seq, using)
        else:
            ok = user is not None and auth.verify(plugin, user.password, self.scramble, token)
        if not ok:
            delay = throttle.failed(address, username)
            _limited.log(logging.WARNING, ("denied", address), "%s access denied%s", s.context(), f" (answered after {delay:g}s)" if delay else "")
            if delay:
                await asyncio.sleep(delay)  # a guesser waits; everyone else does not
            s.send_err(seq, ErrorCode.ACCESS_DENIED, f"Access denied for user '{username}'@'{address}' (using password: {using})")
            return None, seq
        throttle.succeeded(address, username)
        assert user is not None
        if user.require_ssl and not s.secure:
            return self._refuse_plaintext(user, seq, using)
        if plugin == NATIVE_PASSWORD and auth.is_native_hash(user.password) and user.backend_password.upper() == user.password.upper():
            # The proxy keeps only this account's hash: what the client just proved lets it log in
            # to the servers as the same account (auth.Stage1).
            stage1 = auth.native_stage1_from_token(token, self.scramble, user.password)
            if stage1 is not None:
                s.host.learn_stage1(user.backend_username, user.password, stage1)
        if plugin == CACHING_SHA2_PASSWORD and not full:
            s.send(bytes((0x01, CACHING_SHA2_FAST_AUTH_OK)), seq)
            seq += 1
        return user, seq

    def _refuse_plaintext(self, user: User, seq: int, using: str) -> tuple[None, int]:
        """A require_ssl account without TLS: what MariaDB answers for REQUIRE SSL (ERR 1045,
        indistinguishable from a wrong password)."""
        s = self.session
        address = s.client_ip or "?"
        _limited.log(logging.WARNING, ("plaintext", address), "%s login refused: user %r has require_ssl and the client did not use TLS", s.context(), user.username)
        s.send_err(seq, ErrorCode.ACCESS_DENIED, f"Access denied for user '{user.username}'@'{address}' (using password: {using})")
        return None, seq

    async def _caching_sha2_hashed(self, user: User, token: bytes, seq: int, timeout: float) -> tuple[bool | None, int, bool]:
        """caching_sha2_password for an account stored as a hash: the fast path once a full
        authentication cached the account's check, else the full path. Returns (verified, next
        sequence id, whether the full path ran); verified is None for a require_ssl account in
        plaintext (not attempted)."""
        s = self.session
        cached = s.host.sha2_checks.get(user.username)
        if cached is not None and cached[0] == user.password:
            return auth.verify_caching_sha2_fast(cached[1], self.scramble, token), seq, False
        if user.require_ssl and not s.secure:
            return None, seq, False
        s.send(bytes((0x01, CACHING_SHA2_FULL_AUTH)), seq)
        pkt = await self.read_packet(timeout)
        seq, data = pkt.seq + 1, bytes(pkt.payload)
        if not s.secure:
            try:
                keys = await s.host.tls.rsa_keys()
            except tls.TLSSetupError as e:
                log.error("%s caching_sha2_password full authentication without TLS needs the proxy's RSA key pair: %s", s.context(), e)
                return False, seq, True
            if data == bytes((CACHING_SHA2_REQUEST_PUBLIC_KEY,)):
                s.send(b"\x01" + keys.public_pem, seq)
                pkt = await self.read_packet(timeout)
                seq, data = pkt.seq + 1, bytes(pkt.payload)
            try:
                data = auth.xor_with_scramble(keys.decrypt(data), self.scramble)
            except ValueError:
                return False, seq, True  # not encrypted with our key: a wrong answer
        password = data[:-1] if data.endswith(b"\0") else data
        if not auth.verify_clear_password(user.password, password):
            return False, seq, True
        s.host.sha2_checks[user.username] = (user.password, auth.caching_sha2_check_from_clear(password))
        if user.backend_password.upper() == user.password.upper():
            # As for a mysql_native_password login of a hash-only account: the servers are answered
            # with SHA1(password) (auth.Stage1).
            s.host.learn_stage1(user.backend_username, user.password, hashlib.sha1(password).digest())
        return True, seq, True

    def _count_user(self, user: User, seq: int) -> bool:
        """Count this session against `user`'s max_connections (moving it off the user it was
        counted for); at the limit send ERR 1203, as MySQL does for max_user_connections."""
        s = self.session
        if s.counted_user == user.username:
            return True
        if s.closed or not s.host.login_user(user.username, user.max_connections):
            if not s.closed:
                s.log(logging.WARNING, "user %s is at its max_connections (%d): refused", user.username, user.max_connections)
                s.send_err(seq, ErrorCode.TOO_MANY_USER_CONNECTIONS, f"User {user.username} already has more than 'max_user_connections' active connections")
            return False
        if s.counted_user is not None:
            s.host.logout_user(s.counted_user)
        s.counted_user = user.username
        return True

    async def _login_backend(self, user: User, database: str | None, seq: int) -> bool:
        """Become `user` with a fresh state; check that a server of its hostgroups takes it (the
        backend account and the schema): the writer, or while the writer cannot be reached a server
        of its reader hostgroups, so a client can log in (and read) during a failover. Only a
        statement that needs the writer then waits for one or fails.

        On failure send ERR and return False."""
        s = self.session
        s.become(user, database)
        hostgroups = [s.writer_hg] + [p.reader_hostgroup for p in s.router.ruleset.replication_hostgroups if p.writer_hostgroup == s.writer_hg]
        for i, hostgroup in enumerate(hostgroups):
            try:
                conn = await s.lending.ready(hostgroup, wait=0.0)
            except HostgroupError as e:
                if e.err is None and i + 1 < len(hostgroups):
                    continue  # unreachable (not refused): another hostgroup's server can say
                code, message, sqlstate = e.client_err()
                if e.err is not None and e.err.code == ErrorCode.BAD_DB_ERROR:
                    message = f"Unknown database '{database}'"
                s.send_err(seq, code, message, sqlstate)
                return False
            if i:
                s.log(logging.WARNING, "logged in while hostgroup %d is unreachable (checked on hostgroup %d)", s.writer_hg, hostgroup)
            if s.multiplexing:
                s.lending.release(conn)
            return not s.closed
        return False

    # ---- COM_CHANGE_USER ----------------------------------------------------------------------

    async def change_user(self, pkt: Packet) -> None:
        s = self.session
        try:
            cu = parse_change_user(pkt.payload, s.capabilities)
            plugin = cu.auth_plugin or NATIVE_PASSWORD
            user, seq = await self._authenticate(cu.username, plugin, cu.auth_response, 1, s.host.config.handshake_timeout)
            if user is None or not self._count_user(user, seq):
                # As MariaDB does: the ERR has been sent and the session carries on as the old user
                # in its schema, with everything else it had set gone (variables, user variables,
                # temporary tables) and the server's default character set.
                if s.user is not None:
                    s.collation = s.host.collation
                    s.become(s.user, s.state.schema)
                s.free()
                return
            if cu.collation:
                s.collation = cu.collation
            if not await self._login_backend(user, cu.database, seq):
                s.close()
                return
            s.send(make_ok(OK(status=s.status), s.capabilities), seq)
            s.log(logging.INFO, "changed user")
            s.free()
        except ProtocolError as e:
            s.protocol_error(2, e)
        except (asyncio.TimeoutError, ConnectionError):
            s.close()
        except Exception:
            log.exception("%s unexpected error in COM_CHANGE_USER", s.context())
            s.close()

