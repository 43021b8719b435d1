import EventCore
import Foundation
import Synchronization

/// The timeout scheduler of the embedded mode and of tests: it keeps nothing but what the store says. Pending
/// timeouts are the latest `TimeoutScheduled` of each running process; ``fireDueTimeouts()`` runs
/// ``ProcessTimeoutCommand`` for those due by the injected clock, so a test moves a ``ManualClock`` days ahead
/// and fires what fell due.
public final class StoreTimeoutScheduler: TimeoutScheduler {
    private struct Index {
        var position = 0
        var processes: [StreamID: ProcessLifecycle] = [:]
    }

    /// Runs the timeout commands.
    public let runtime: ProcessRuntime
    /// Decides what is due.
    public let clock: any ProcessClock
    private let index = Mutex(Index())
    private let pageSize: Int

    /// Creates a scheduler.
    /// - Parameters:
    ///   - runtime: executes timeout commands on the store and records metrics.
    ///   - clock: the time timeouts are compared with and fired at.
    ///   - pageSize: events read per query while catching up with the store.
    public init(runtime: ProcessRuntime, clock: any ProcessClock, pageSize: Int = 1000) {
        self.runtime = runtime
        self.clock = clock
        self.pageSize = pageSize
    }

    /// Records `timeout` in the process stream unless the store knows it already; supersedes the pending one.
    public func schedule(_ timeout: ScheduledTimeout) async throws {
        _ = try await runtime.execute(ScheduleProcessTimeout(timeout))
    }

    /// Records the cancellation of `timeout` if it is still pending.
    public func cancel(_ timeout: CancelledTimeout) async throws {
        _ = try await runtime.execute(CancelProcessTimeout(processID: timeout.processID, timeoutID: timeout.timeoutID, reason: "cancelled through the scheduler"))
    }

    /// The pending timeouts of running processes, earliest first, as the store says now.
    public func pending() async throws -> [ScheduledTimeout] {
        try await catchUp()
        return index.withLock { index in
            index.processes.values.compactMap { lifecycle in
                guard lifecycle.status == .running, let timeout = lifecycle.pendingTimeout else { return nil }
                return ScheduledTimeout(processID: lifecycle.processID, timeout)
            }
        }
        .sorted { ($0.dueAt, $0.processID) < ($1.dueAt, $1.processID) }
    }

    /// Fires every pending timeout due by the clock, earliest first, and returns what each did. Retries a
    /// firing schedules are due later, so calling this once fires each due timeout once.
    @discardableResult
    public func fireDueTimeouts() async throws -> [TimeoutFiring] {
        let now = clock.now
        var firings: [TimeoutFiring] = []
        for timeout in try await pending() where timeout.dueAt <= now {
            firings.append(try await runtime.fireTimeout(timeout, at: now))
        }
        return firings
    }

    /// Fires due timeouts every `interval` until the task is cancelled.
    /// - Parameter sleeper: the clock that waits between rounds.
    public func run(pollingEvery interval: Duration, sleeper: any Clock<Duration> = ContinuousClock()) async throws {
        while !Task.isCancelled {
            try await fireDueTimeouts()
            try await sleeper.sleep(for: interval)
        }
    }

    /// Folds the lifecycle events committed since the last call.
    private func catchUp() async throws {
        let codec = EventCodec()
        while true {
            let position = index.withLock { $0.position }
            let page = try await runtime.executor.store.events(matching: EventQuery(
                eventTypes: Array(ProcessLifecycleEvent.TypeName.all), afterPosition: position, limit: pageSize
            ))
            var decoded: [(StoredEvent, ProcessLifecycleEvent)] = []
            for stored in page {
                if let event = try codec.decode(stored, as: ProcessLifecycleEvent.self) { decoded.append((stored, event)) }
            }
            index.withLock { index in
                for (stored, event) in decoded where stored.globalPosition > index.position {
                    index.processes[stored.streamID, default: ProcessLifecycle(processID: stored.streamID)].apply(event)
                    index.position = stored.globalPosition
                }
            }
            if page.count < pageSize { return }
        }
    }
}

/// Records a timeout for a running process, superseding its pending one. Writes nothing when the store
/// already knows the timeout id or the process is not running.
public struct ScheduleProcessTimeout: Command {
    /// The timeout.
    public var timeout: ScheduledTimeout

    /// Creates the command.
    public init(_ timeout: ScheduledTimeout) {
        self.timeout = timeout
    }

    /// The process stream.
    public var readStreams: [StreamID] { [timeout.processID] }
    /// A process with no events.
    public var initialState: ProcessLifecycle { ProcessLifecycle(processID: timeout.processID) }
    /// Folds a lifecycle event.
    public func apply(_ state: inout ProcessLifecycle, _ event: ProcessLifecycleEvent) { state.apply(event) }

    /// See the type's description.
    public func handle(_ state: ProcessLifecycle, context: CommandContext) throws -> [StreamWrite<ProcessLifecycleEvent>] {
        guard state.reasonToIgnore(timeoutID: timeout.timeoutID) == .unknownTimeout else { return [] }
        var writes: [StreamWrite<ProcessLifecycleEvent>] = []
        if let pending = state.pendingTimeout {
            writes.append(try context.write(.timeoutCancelled(TimeoutCancelled(timeoutID: pending.timeoutID, reason: "superseded by \(timeout.timeoutID)")), to: timeout.processID))
        }
        writes.append(try context.write(
            .timeoutScheduled(TimeoutScheduled(timeoutID: timeout.timeoutID, dueAt: timeout.dueAt, attempt: timeout.attempt)),
            to: timeout.processID
        ))
        return writes
    }
}

/// Cancels a process's pending timeout. Writes nothing when `timeoutID` is not the pending one.
public struct CancelProcessTimeout: Command {
    /// The process stream.
    public var processID: StreamID
    /// The timeout.
    public var timeoutID: String
    /// Why, for the history.
    public var reason: String

    /// Creates the command.
    public init(processID: StreamID, timeoutID: String, reason: String) {
        self.processID = processID
        self.timeoutID = timeoutID
        self.reason = reason
    }

    /// The process stream.
    public var readStreams: [StreamID] { [processID] }
    /// A process with no events.
    public var initialState: ProcessLifecycle { ProcessLifecycle(processID: processID) }
    /// Folds a lifecycle event.
    public func apply(_ state: inout ProcessLifecycle, _ event: ProcessLifecycleEvent) { state.apply(event) }

    /// See the type's description.
    public func handle(_ state: ProcessLifecycle, context: CommandContext) throws -> [StreamWrite<ProcessLifecycleEvent>] {
        guard state.reasonToIgnore(timeoutID: timeoutID) == nil else { return [] }
        return [try context.write(.timeoutCancelled(TimeoutCancelled(timeoutID: timeoutID, reason: reason)), to: processID)]
    }
}
