import EventCore
import Foundation

/// The calls a worker makes for processes: execute a routed command, fire a timeout. Each returns what to
/// publish and which timeouts to schedule, and records process metrics for what it committed.
public struct ProcessRuntime: Sendable {
    /// Runs the commands.
    public let executor: CommandExecutor
    /// Where started, completed and failed processes are counted; `nil` records nothing.
    public let metrics: ProcessMetrics?

    /// Creates a runtime.
    public init(executor: CommandExecutor, metrics: ProcessMetrics? = nil) {
        self.executor = executor
        self.metrics = metrics
    }

    /// Executes `command` with `options` and records metrics for what it committed.
    public func execute<C: Command>(_ command: C, options: ExecutionOptions = ExecutionOptions()) async throws -> ProcessExecution {
        let result = try await executor.execute(command, options: options)
        metrics?.record(result)
        return ProcessExecution(result)
    }

    /// Executes a command a router built from a message, with the message's idempotency key.
    public func execute(_ routed: RoutedCommand) async throws -> ProcessExecution {
        let result = try await routed.execute(on: executor)
        metrics?.record(result)
        return ProcessExecution(result)
    }

    /// Why `timeout` is to be ignored, if the executor's stream cache alone shows it, without a store round trip:
    /// the process ended, or the timeout was cancelled, superseded or has fired. These stay true whatever is
    /// appended later, so a cache behind the store cannot mislead; nil when the process is not cached or the
    /// timeout may still be pending (it then goes through ``fireTimeout(_:at:options:)``).
    ///
    /// A worker asks this when a timeout arrives, before holding it until its due time: most timeouts of a
    /// process that advances on time arrive after their step was done.
    public func settledReasonToIgnore(_ timeout: ScheduledTimeout) -> TimeoutIgnoredReason? {
        guard let state = executor.cachedState(of: ProcessTimeoutCommand(timeout, firedAt: Date())),
              let reason = state.reasonToIgnore(timeoutID: timeout.timeoutID)
        else { return nil }
        switch reason {
        case .processEnded, .cancelled, .superseded, .alreadyFired: return reason
        case .unknownProcess, .unknownTimeout: return nil
        }
    }

    /// Handles the arrival of `timeout` at `now`.
    ///
    /// - Parameter options: the idempotency key of the timeout message, if it came from a broker. A timeout
    ///   that is not yet due records no key, so the same message can come back.
    /// - Returns: what the timeout did and what the worker must publish and schedule.
    public func fireTimeout(_ timeout: ScheduledTimeout, at now: Date, options: ExecutionOptions = ExecutionOptions()) async throws -> TimeoutFiring {
        let ignored = IgnoredReasonRecord()
        let command = ProcessTimeoutCommand(processID: timeout.processID, timeoutID: timeout.timeoutID, firedAt: now, recordingIgnoredReasonIn: ignored)
        let execution: ProcessExecution
        do {
            execution = try await execute(command, options: options)
        } catch let error as ProcessTimeoutError {
            switch error {
            case .notYetDue(let dueAt): return TimeoutFiring(outcome: .notYetDue(dueAt), execution: nil)
            }
        }
        switch execution.result.outcome {
        case .committed, .duplicate:
            let codec = EventCodec()
            for stored in execution.result.events {
                switch try codec.decode(stored, as: ProcessLifecycleEvent.self) {
                case .retryScheduled(let retry)?:
                    let next = execution.timeoutsToSchedule.first
                    return TimeoutFiring(outcome: .retryScheduled(attempt: retry.attempt, next: next), execution: execution)
                case .failed(let failed)?:
                    return TimeoutFiring(outcome: .failed(reason: failed.reason), execution: execution)
                default:
                    continue
                }
            }
            return TimeoutFiring(outcome: .ignored(.alreadyFired), execution: execution)
        case .noOp:
            if let reason = ignored.value {
                return TimeoutFiring(outcome: .ignored(reason), execution: execution)
            }
            let snapshot = try await executor.store.read(stream: timeout.processID)
            var lifecycle = ProcessLifecycle(processID: timeout.processID)
            let codec = EventCodec()
            for stored in snapshot.events {
                lifecycle.count(stored)
                if let event = try codec.decode(stored, as: ProcessLifecycleEvent.self) { lifecycle.apply(event) }
            }
            return TimeoutFiring(outcome: .ignored(lifecycle.reasonToIgnore(timeoutID: timeout.timeoutID) ?? .alreadyFired), execution: execution)
        }
    }
}

/// What the arrival of a timeout did.
public struct TimeoutFiring: Sendable {
    /// The effect on the process.
    public enum Outcome: Sendable, Hashable {
        /// A retry was recorded; `next` is the timeout to schedule.
        case retryScheduled(attempt: Int, next: ScheduledTimeout?)
        /// The process failed.
        case failed(reason: String)
        /// Nothing was written.
        case ignored(TimeoutIgnoredReason)
        /// The timeout came early; deliver it again at this date.
        case notYetDue(Date)
    }

    /// The effect on the process.
    public var outcome: Outcome
    /// The execution, for publishing and scheduling; `nil` when the timeout was not yet due.
    public var execution: ProcessExecution?
}
