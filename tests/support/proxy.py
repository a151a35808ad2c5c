"""A fault-injecting TCP proxy: cuts, delays and cuts mid-packet between two parts."""

from __future__ import annotations

import asyncio
import contextlib
import random


class FaultProxy:
    """Listens on a free port and forwards to ``target``; faults are switched on and off."""

    def __init__(self, target_port: int, *, rng: random.Random) -> None:
        self.target_port = target_port
        self.rng = rng
        self.port = 0
        self.delay_s = 0.0
        self.cut = False  # refuse and drop every connection while set
        self.cut_mid_packet = False  # the next chunk is forwarded in part, then the link drops
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_all()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, writer, upstream=False)),
        ]
        self._pipes.update(pipes)
        for pipe in pipes:
            pipe.add_done_callback(self._pipes.discard)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self.cut:
                    return
                if self.delay_s:
                    await asyncio.sleep(self.delay_s * self.rng.uniform(0.5, 1.5))
                if upstream and self.cut_mid_packet and len(data) > 1:
                    self.cut_mid_packet = False
                    writer.write(data[: self.rng.randrange(1, len(data))])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
