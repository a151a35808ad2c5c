"""A virtual BLE radio: bumble controllers on one in-process link.

There is no radio on the test machines (and none in the demo), so the BLE drivers run
against this instead: every simulated peripheral is a bumble ``Device`` with its own
virtual ``Controller`` on a shared ``LocalLink``. The gateway's adapter is a
``BumbleAdapter`` (``warelink.edge.drivers.ble_bumble``: bleak backends over a bumble
central) whose controller is on the same link, reached one of two ways:

* in the same process, ``VirtualBleLink`` itself is that adapter (its ``client_backend``
  and ``scanner_backend`` go to ``BleakClient`` / ``BleakScanner``), for tests;
* from another process, ``HciServer`` serves a controller on the link over a socket, and
  the gateway opens it as an ordinary HCI transport (``[gateway.ble] hci_transport =
  "tcp-client:127.0.0.1:PORT"`` or ``"unix:PATH"``): an ``HciBleAdapter``. This is how
  ``warelink sim run`` and the demo give a gateway process its BLE devices.

Either way the drivers use bleak's public API only, and everything travels as real
HCI/LL/ATT packets through bumble's host and controller stacks.

A device out of range is modelled the way a central sees it: its link drops with reason
"connection timeout" (0x08, supervision timeout) and it stops advertising, so scans and
connects time out until it comes back.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import structlog
from bumble import hci, ll
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, StreamPacketSource

from warelink.edge.drivers.ble_bumble import DEFAULT_CENTRAL_ADDRESS, BumbleAdapter

log = structlog.get_logger(__name__)


class _Controller(Controller):
    """bumble's virtual controller, completing what 0.0.236 leaves out of LE Create
    Connection Cancel: it must drop the pending connection and report an LE Connection
    Complete with status 0x02 (Core spec Vol 4, Part E, 7.8.13). Without that, a connect
    that timed out (peer not advertising) leaves the controller initiating forever and the
    host waiting for ever; every later connect is refused as "command disallowed"."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After this command's own Command Complete, as a real controller orders them.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def drop_links(self) -> None:
        """Forget what the host set up, as a reset adapter does: its links end (the peers
        see a supervision timeout and advertise again), no scan, no connect pending."""
        for connection in list(self.le_connections.values()):
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        """bumble's Reset changes nothing; a new host starts with one, and must not find the
        links of the host before it still up (a gateway restarted)."""
        self.drop_links()
        return super().on_hci_reset_command(command)


class VirtualBleLink(BumbleAdapter):
    """One shared "air": peripherals join it with ``add_device``. It is also the gateway's
    adapter in the same process (``client_backend``, ``scanner_backend``), whose controller
    joins the link on first use; ``serve_hci`` gives one to another process."""

    def __init__(self, *, central_address: str = DEFAULT_CENTRAL_ADDRESS) -> None:
        super().__init__(address=central_address)
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self._controllers: dict[int, Controller] = {}
        self._central_controller: Controller | None = None

    def add_device(self, name: str, address: str) -> Device:
        """A new bumble device (not powered on yet) with its own controller on the link."""
        controller = _Controller(name, link=self.link, public_address=address)
        device = Device(
            name=name,
            address=hci.Address(address),
            host=Host(controller, AsyncPipeSink(controller)),
        )
        self._controllers[id(device)] = controller
        return device

    def remove_device(self, device: Device) -> None:
        """Take a device's controller off the link: nothing it sends arrives any more."""
        controller = self._controllers.pop(id(device), None)
        if controller is not None:
            self._leave(controller)

    def serve_hci(self, gateway_transport: str) -> HciServer:
        """A controller on this link for a gateway in another process (see ``HciServer``)."""
        return HciServer(self, gateway_transport)

    async def _open_host(self) -> Host:
        controller = _Controller(
            "gateway-adapter", link=self.link, public_address=self.central_address
        )
        self._central_controller = controller
        return Host(controller, AsyncPipeSink(controller))

    async def _close_host(self) -> None:
        controller, self._central_controller = self._central_controller, None
        if controller is not None:
            self._leave(controller)

    def _leave(self, controller: Controller) -> None:
        if controller in self.link.controllers:
            self.link.remove_controller(controller)


class _HostConnection(StreamPacketSource):
    """One host (a gateway's bumble stack) on the socket: HCI packets both ways."""

    def __init__(self, server: HciServer) -> None:
        super().__init__()
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._attach(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._detach(self)

    def on_packet(self, packet: bytes) -> None:
        """From the controller to this host."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(packet)


class HciServer:
    """A virtual controller on a ``VirtualBleLink``, served to a gateway's host in another
    process over a socket. It listens where the gateway's ``hci_transport`` points:
    ``tcp-client:HOST:PORT`` (a TCP server on HOST:PORT) or ``unix:PATH`` (a Unix socket).

    One host at a time: a new one takes over (a gateway restarted before its old
    connection was seen closed); when the host leaves, the controller drops its links, so
    the peripherals advertise again for the next one. bumble's own ``tcp-server:`` transport
    is not used because it keeps one byte stream across clients and never stops listening.
    """

    def __init__(self, link: VirtualBleLink, gateway_transport: str) -> None:
        self.link = link
        self.gateway_transport = gateway_transport
        self.controller: _Controller | None = None
        self._host: _HostConnection | None = None
        self._server: asyncio.Server | None = None
        self.hosts = 0  # how many hosts attached so far

    async def __aenter__(self) -> Self:
        scheme, _, spec = self.gateway_transport.partition(":")
        if scheme not in ("tcp-client", "unix", "unix-client"):
            raise ValueError(
                f"{self.gateway_transport}: a simulator serves tcp-client:HOST:PORT or"
                " unix:PATH transports only"
            )
        self.controller = _Controller(
            "gateway-adapter", link=self.link.link, public_address=self.link.central_address
        )
        loop = asyncio.get_running_loop()
        try:
            if scheme == "tcp-client":
                host, _, port = spec.rpartition(":")
                self._server = await loop.create_server(
                    lambda: _HostConnection(self), host, int(port), reuse_address=True
                )
            else:
                self._server = await loop.create_unix_server(lambda: _HostConnection(self), spec)
        except BaseException:
            self.link._leave(self.controller)
            raise
        log.info("sim.ble_hci_serving", transport=self.gateway_transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.controller is not None:
            self.controller.drop_links()
            self.link._leave(self.controller)
        if self._server is not None:
            self._server.close()
            if self._host is not None and self._host.transport is not None:
                self._host.transport.close()
            await self._server.wait_closed()

    def _attach(self, host: _HostConnection) -> None:
        assert self.controller is not None
        previous, self._host = self._host, host
        if previous is not None and previous.transport is not None:
            previous.transport.close()
        self.controller.drop_links()
        host.set_packet_sink(self.controller)
        self.controller.host = host
        self.hosts += 1

    def _detach(self, host: _HostConnection) -> None:
        if self._host is not host:
            return
        self._host = None
        if self.controller is not None:
            self.controller.host = None
            self.controller.drop_links()
