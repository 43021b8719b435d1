import EventCore
import NIOCore
import PostgresNIO
import Synchronization

/// Round trips on pooled connections that always end: with the server's answer, or with an error once the
/// connection is gone or the time limit has passed.
///
/// postgres-nio (1.33) can leave a query unanswered for ever when its connection dies around it: a backend
/// terminated on the server while its connection sat idle in the pool is handed out again, the query is
/// written, and neither rows nor an error ever come back. A fleet's database restarts, fails over and has its
/// idle sessions terminated, so a store must not hang on that. Four guards, measured together against a loop
/// that terminates a random pooled backend every 50 ms (16 callers, about 45,000 round trips in 30 s: every one
/// answered, where without them all 16 callers hung within seconds):
///
/// 1. The query is written from the connection's own event loop, so the check that the channel is still open
///    and the write happen in one turn of that loop, with no close in between.
/// 2. A connection found closed when it is leased has received nothing: it goes back and another is leased.
/// 3. A round trip still unanswered shortly after its connection has closed fails with ``ConnectionLost``,
///    and its task is left behind. Each store watches each connection's close once, not once per query.
/// 4. A round trip (the lease included) that outlasts the time limit fails with ``TimedOut``, and its task is
///    left behind: an answer lost without the connection closing must not hold up every caller behind it.
///
/// Each round trip is one task, started on the event loop of the connection leased last: the lease, the query
/// and the rows then stay on that loop, and the caller is resumed once. (A task for the time limit and another
/// for the query cost a pair of thread switches more per round trip: about a quarter of the client's CPU per
/// command in `EventStoreBenchmark` at one executor.)
final class ConnectionRoundTrip: Sendable {
    /// A round trip whose connection closed without an answer, or that found no open connection.
    struct ConnectionLost: Error, CustomStringConvertible {
        var description: String
    }

    /// A round trip that was not answered within the time limit; it may still take effect.
    struct TimedOut: Error, CustomStringConvertible {
        var limit: Duration
        var description: String { "the database did not answer within \(limit)" }
    }

    /// A connection found closed before anything was sent on it.
    private struct StaleConnection: Error {}

    private struct Watched {
        var waiters: [UInt64: @Sendable (ConnectionLost) -> Void] = [:]
    }

    private struct State: ~Copyable {
        var connections: [PostgresConnection.ID: Watched] = [:]
        var nextToken: UInt64 = 0
        /// The executor of the event loop of the connection leased last: where the next round trip starts.
        var lastLoop: EventLoopExecutor?
    }

    private let client: PostgresClient
    private let state = Mutex(State())
    /// How long after its connection closed a round trip may still be answered before it is given up.
    private let grace: TimeAmount
    /// How long a round trip may take; nil waits for ever (unless the connection closes).
    private let timeLimit: Duration?
    private let deadlines = Deadlines()

    init(client: PostgresClient, timeLimit: Duration? = nil, grace: TimeAmount = .milliseconds(500)) {
        self.client = client
        self.timeLimit = timeLimit
        self.grace = grace
    }

    /// The executor of the event loop of the connection leased last, once there was one.
    var lastLoop: (any TaskExecutor)? { state.withLock { $0.lastLoop } }

    /// Runs `body` on a leased, open connection, on that connection's event loop, in a task of its own, and
    /// returns its result. A connection that closes before `body` is answered ends it with ``ConnectionLost``,
    /// the time limit (unless `withinTimeLimit` is false) with ``TimedOut``; cancelling the caller does not
    /// cancel it.
    func run<T: Sendable>(withinTimeLimit: Bool = true, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let executor = state.withLock { $0.lastLoop }
        let timeLimit = withinTimeLimit ? timeLimit : nil
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let answer = FirstClaim()
            let settle: @Sendable (Result<T, any Error>) -> Void = { result in
                if answer.claim() { continuation.resume(with: result) }
            }
            let deadline = timeLimit.map { limit in deadlines.add(.now + limit) { settle(.failure(TimedOut(limit: limit))) } }
            Task(executorPreference: executor) {
                let result: Result<T, any Error>
                do { result = .success(try await self.onOpenConnection(body, lost: { settle(.failure($0)) })) } catch { result = .failure(error) }
                if let deadline { self.deadlines.remove(deadline) }
                settle(result)
            }
        }
    }

    /// Leases an open connection (up to four tries) and runs `body` on it, from its event loop; `lost` is called
    /// if the connection closes meanwhile.
    private func onOpenConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T, lost: @escaping @Sendable (ConnectionLost) -> Void
    ) async throws -> T {
        for _ in 0..<4 {
            do {
                return try await client.withConnection { connection in
                    do {
                        guard !connection.isClosed else { throw StaleConnection() }
                        let token = watch(connection, lost)
                        defer { forget(connection.id, token) }
                        // Run on the connection's loop: no close can come between this check and the query's
                        // write, which `body` makes before it first suspends.
                        let write = { @Sendable () async throws -> T in
                            guard !connection.isClosed else { throw StaleConnection() }
                            return try await body(connection)
                        }
                        let loop = connection.eventLoop
                        if loop.inEventLoop { return try await write() }
                        let executor = state.withLock { state in
                            if let last = state.lastLoop, last.loop === loop { return last }
                            let executor = EventLoopExecutor(loop)
                            state.lastLoop = executor
                            return executor
                        }
                        return try await withTaskExecutorPreference(executor) { try await write() }
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
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
