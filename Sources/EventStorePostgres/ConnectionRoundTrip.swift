import NIOCore
import PostgresNIO
import Synchronization

/// Round trips on pooled connections that always end: with the server's answer, or with an error once the
/// connection is gone.
///
/// postgres-nio (1.33) can leave a query unanswered for ever when its connection dies around it: a backend
/// terminated on the server while its connection sat idle in the pool is handed out again, the query is
/// written, and neither rows nor an error ever come back. A fleet's database restarts, fails over and has its
/// idle sessions terminated, so a store must not hang on that. Three guards, measured together against a loop
/// that terminates a random pooled backend every 50 ms (16 callers, about 45,000 round trips in 30 s: every one
/// answered, where without them all 16 callers hung within seconds):
///
/// 1. The round trip runs on the connection's own event loop (a task executor preference), so the check that
///    the channel is still open and the write of the query happen in one turn of that loop, with no close in
///    between. It also spares the two thread switches per round trip between the cooperative pool and the loop.
/// 2. A connection found closed when it is leased has received nothing: it goes back and another is leased.
/// 3. A round trip still unanswered shortly after its connection has closed fails with ``ConnectionLost``,
///    and its task is left behind. Each store watches each connection's close once, not once per query.
final class ConnectionRoundTrip: Sendable {
    /// A round trip whose connection closed without an answer, or that found no open connection.
    struct ConnectionLost: Error, CustomStringConvertible {
        var description: String
    }

    /// A connection found closed before anything was sent on it.
    private struct StaleConnection: Error {}

    private struct Watched {
        var waiters: [UInt64: @Sendable (ConnectionLost) -> Void] = [:]
    }

    private struct State: ~Copyable {
        var connections: [PostgresConnection.ID: Watched] = [:]
        var nextToken: UInt64 = 0
    }

    private let client: PostgresClient
    private let state = Mutex(State())
    /// How long after its connection closed a round trip may still be answered before it is given up.
    private let grace: TimeAmount

    init(client: PostgresClient, grace: TimeAmount = .milliseconds(500)) {
        self.client = client
        self.grace = grace
    }

    /// Runs `body` on a leased, open connection, on that connection's event loop, and returns its result; a
    /// connection that closes before `body` is answered ends it with ``ConnectionLost``.
    func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        for _ in 0..<4 {
            do {
                return try await client.withConnection { connection in
                    do {
                        guard !connection.isClosed else { throw StaleConnection() }
                        return try await self.answer(on: connection, executor: EventLoopExecutor(connection.eventLoop)) {
                            // The first job of a task on the loop: no close can come between this check and the
                            // query's write, which `body` makes before it first suspends.
                            guard !connection.isClosed else { throw StaleConnection() }
                            return try await body(connection)
                        }
                    } catch is StaleConnection {
                        // The pool learns of a close through the connection's close future: wait for it before the
                        // connection goes back, or the pool hands the same one out again at once.
                        _ = try? await connection.closeFuture.get()
                        throw StaleConnection()
                    }
                }
            } catch is StaleConnection {
                continue
            }
        }
        throw ConnectionLost(description: "every connection the pool handed out was already closed")
    }

    /// Runs `body` in a task of its own, on the connection's event loop, and returns its answer, unless
    /// `connection` closes first: then, after the grace period, the caller gets ``ConnectionLost`` and the task
    /// is abandoned.
    private func answer<T: Sendable>(
        on connection: PostgresConnection, executor: EventLoopExecutor, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let answer = FirstAnswer()
            let settle: @Sendable (Result<T, any Error>) -> Void = { result in
                if answer.claim() { continuation.resume(with: result) }
            }
            let token = watch(connection) { settle(.failure($0)) }
            Task(executorPreference: executor) {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                self.forget(connection.id, token)
                settle(result)
            }
        }
    }

    /// Registers `fail` to be called once `connection` has closed (plus the grace period); returns its token.
    private func watch(_ connection: PostgresConnection, _ fail: @escaping @Sendable (ConnectionLost) -> Void) -> UInt64 {
        let id = connection.id
        let (token, first) = state.withLock { state in
            state.nextToken += 1
            let first = state.connections[id] == nil
            state.connections[id, default: Watched()].waiters[state.nextToken] = fail
            return (state.nextToken, first)
        }
        if first {
            let grace = grace
            connection.closeFuture.whenComplete { [weak self] _ in
                guard let self else { return }
                connection.eventLoop.scheduleTask(in: grace) { [weak self] in self?.closed(id) }
            }
        }
        return token
    }

    private func forget(_ id: PostgresConnection.ID, _ token: UInt64) {
        _ = state.withLock { $0.connections[id]?.waiters.removeValue(forKey: token) }
    }

    private func closed(_ id: PostgresConnection.ID) {
        let waiters = state.withLock { $0.connections.removeValue(forKey: id)?.waiters.values.map { $0 } ?? [] }
        let lost = ConnectionLost(description: "the connection to the database closed before the server answered")
        for fail in waiters { fail(lost) }
    }
}

/// Runs the jobs of tasks that prefer it on a NIO event loop.
final class EventLoopExecutor: TaskExecutor {
    private let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
