import EventCore
import Foundation

/// Runs sagas: forward through their steps, and on a failed step back through the completed ones, recording
/// every move in the saga stream first so another runner can take over at any point.
///
/// Every step command runs with an idempotency key of the saga and the step, so a step that committed before
/// a crash is not done twice when the saga resumes: the store reports it as a duplicate and the runner
/// records it as completed.
public struct SagaRunner: Sendable {
    /// Executes the saga's records and metrics.
    public let runtime: ProcessRuntime
    private let sleeper: any Clock<Duration>
    private let clock: any ProcessClock

    /// Creates a runner.
    /// - Parameters:
    ///   - runtime: the executor (and metrics) steps and records run with.
    ///   - sleeper: waits between retries; a test passes a clock that returns at once.
    ///   - clock: the time recorded in the saga's events.
    public init(runtime: ProcessRuntime, sleeper: any Clock<Duration> = ContinuousClock(), clock: any ProcessClock = SystemProcessClock()) {
        self.runtime = runtime
        self.sleeper = sleeper
        self.clock = clock
    }

    private var executor: CommandExecutor { runtime.executor }

    /// Starts `definition`'s saga, or continues it if it already started, and runs it as far as it goes.
    public func run<Definition: SagaDefinition>(_ definition: Definition) async throws -> SagaReport {
        let sagaID = try Definition.sagaID(for: definition.businessID)
        let state = try await state(of: sagaID)
        var committed = 0
        if state.nextAction == .begin {
            let steps = definition.steps()
            let json = try JSONEncoder.sorted.encode(definition)
            committed = try await record(.begin(
                processType: Definition.sagaType, businessID: definition.businessID, stepNames: steps.map(\.name),
                definition: String(decoding: json, as: UTF8.self), retryPolicy: definition.retryPolicy
            ), in: sagaID, businessID: definition.businessID)
        }
        return try await drive(Definition.self, sagaID: sagaID, atLeast: committed)
    }

    /// Continues a saga from its stream alone, such as after a crash.
    /// - Throws: ``SagaError`` if the saga never started.
    public func resume<Definition: SagaDefinition>(_ type: Definition.Type, businessID: String) async throws -> SagaReport {
        try await drive(type, sagaID: try Definition.sagaID(for: businessID))
    }

    /// Lets a saga that needs attention try its compensations again (after an operator fixed the cause),
    /// then runs it as far as it goes.
    public func retryCompensation<Definition: SagaDefinition>(_ type: Definition.Type, businessID: String, by operatorName: String) async throws -> SagaReport {
        let sagaID = try Definition.sagaID(for: businessID)
        let committed = try await record(.resumeCompensation(by: operatorName), in: sagaID, businessID: businessID)
        return try await drive(type, sagaID: sagaID, atLeast: committed)
    }

    /// The saga as its stream tells.
    public func state(of sagaID: StreamID) async throws -> SagaState {
        try await read(sagaID).state
    }

    /// The saga folded from its stream, with the stream's version.
    private func read(_ sagaID: StreamID) async throws -> (state: SagaState, version: Int) {
        let snapshot = try await executor.store.read(stream: sagaID)
        var state = SagaState(sagaID: sagaID)
        let codec = EventCodec()
        for stored in snapshot.events {
            if let event = try codec.decode(stored, as: ProcessEvent<SagaEvent>.self) { state.apply(event) }
        }
        return (state, snapshot.version(of: sagaID))
    }

    /// The saga as its stream tells, from a read that holds at least the first `version` events: the runner
    /// never decides, nor reports, on a state older than what it recorded itself. A store that keeps answering
    /// with an older stream fails the run with a retryable error, so the run is tried again later.
    private func state(of sagaID: StreamID, atLeast version: Int) async throws -> SagaState {
        var read = try await read(sagaID)
        var attempt = 1
        while read.version < version {
            guard attempt < Self.staleReadAttempts else {
                throw EventStoreError(
                    .storeUnavailable,
                    "the store returned the saga stream at version \(read.version), older than version \(version) it committed",
                    streamID: sagaID
                )
            }
            try await sleeper.sleep(for: .milliseconds(5 * attempt))
            attempt += 1
            read = try await self.read(sagaID)
        }
        return read.state
    }

    /// How often a read older than a committed version is repeated before the run gives up.
    private static let staleReadAttempts = 5

    private func drive<Definition: SagaDefinition>(_ type: Definition.Type, sagaID: StreamID, atLeast committed: Int = 0) async throws -> SagaReport {
        var state = try await state(of: sagaID, atLeast: committed)
        guard let json = state.definition else { throw SagaError(sagaID: sagaID, message: "the saga has not started") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let definition = try decoder.decode(Definition.self, from: Data(json.utf8))
        let steps = definition.steps()
        guard steps.map(\.name) == state.stepNames else {
            throw SagaError(sagaID: sagaID, message: "the definition's steps differ from the steps the saga started with")
        }
        let policy = state.lifecycle.started?.retryPolicy ?? definition.retryPolicy
        // Every pass records at least one event or ends; the bound only guards against a definition error.
        let passes = steps.count * (policy.maxRetries + 4) * 2 + 8
        for _ in 0..<passes {
            switch state.nextAction {
            case .begin:
                throw SagaError(sagaID: sagaID, message: "the saga has not started")
            case .awaitOperator:
                return SagaReport(state: state)
            case .finished:
                // A saga with nothing left to do has ended; one that runs on without a next move is stuck, and
                // its report must not pass for an end.
                guard state.lifecycle.status.isTerminal else {
                    throw SagaError(sagaID: sagaID, message: "the saga is \(state.phase) with no move left to make")
                }
                return SagaReport(state: state)
            case .runStep(let index):
                let version = try await runStep(index, steps[index], state: state, sagaID: sagaID, policy: policy)
                state = try await self.state(of: sagaID, atLeast: version)
            case .compensateStep(let index):
                let version = try await compensateStep(index, steps[index], state: state, sagaID: sagaID, policy: policy)
                state = try await self.state(of: sagaID, atLeast: version)
            }
        }
        throw SagaError(sagaID: sagaID, message: "the saga did not settle within \(passes) moves")
    }

    /// Runs step `index` forward. A business failure (the command refused) is recorded and turns the saga to
    /// compensation. A transient store failure (see ``isTransient(_:)``) says nothing about the step: it is
    /// retried in place by the saga's policy and, if it outlasts the policy, rethrown with the saga left where
    /// it stands (the step started, its outcome not recorded), so a later run resumes it. The step's
    /// idempotency key makes a retry of a command that committed before the failure a duplicate.
    /// - Returns: the saga stream's version after the last record.
    private func runStep(_ index: Int, _ step: SagaStep, state: SagaState, sagaID: StreamID, policy: RetryPolicy) async throws -> Int {
        if !state.startedSteps.contains(index) { _ = try await record(.stepStarted(index), in: sagaID, businessID: state.businessID) }
        let options = try options(sagaID: sagaID, state: state, key: "step-\(index)")
        if let refusal = try await executeRetryingTransientFailures(step.command, options: options, policy: policy) {
            return try await record(.stepFailed(index, reason: String(describing: refusal)), in: sagaID, businessID: state.businessID)
        }
        // Not inside the execution's error handling: failing to record a step that committed is no failure of the step.
        return try await record(.stepSucceeded(index), in: sagaID, businessID: state.businessID)
    }

    /// Runs the compensation of step `index`. A business failure (the command refused) is recorded as a failed
    /// attempt; when attempts outrun the policy the saga needs attention. A transient store failure is retried
    /// in place by the policy and, if it outlasts it, rethrown without recording anything: version conflicts
    /// on a busy resource or an unreachable store are no reason to call an operator, and a later run resumes
    /// the compensation.
    /// - Returns: the saga stream's version after the last record.
    private func compensateStep(_ index: Int, _ step: SagaStep, state: SagaState, sagaID: StreamID, policy: RetryPolicy) async throws -> Int {
        if !state.compensationsStarted.contains(index) { _ = try await record(.compensationStarted(index), in: sagaID, businessID: state.businessID) }
        let options = try options(sagaID: sagaID, state: state, key: "compensation-\(index)")
        if let refusal = try await executeRetryingTransientFailures(step.compensation, options: options, policy: policy) {
            let version = try await record(.compensationFailed(index, reason: String(describing: refusal)), in: sagaID, businessID: state.businessID)
            let attempts = state.compensationFailures[index, default: 0] + 1
            if policy.allowsRetry(afterAttempt: attempts) {
                try await sleeper.sleep(for: policy.delay(beforeRetry: attempts, unitRandom: 0))
            }
            return version
        }
        return try await record(.compensationSucceeded(index), in: sagaID, businessID: state.businessID)
    }

    /// Executes `command`, retrying transient store failures in place under `policy` and rethrowing the last one
    /// when they outlast it. Returns nil when the command committed (or found its earlier commit), or the
    /// business refusal it threw, for the caller to record.
    private func executeRetryingTransientFailures(_ command: SagaCommand, options: ExecutionOptions, policy: RetryPolicy) async throws -> (any Error)? {
        var attempt = 1
        while true {
            do {
                _ = try await command.execute(on: executor, options: options)
                return nil
            } catch where Self.isTransient(error) {
                guard policy.allowsRetry(afterAttempt: attempt) else { throw error }
                try await sleeper.sleep(for: policy.delay(beforeRetry: attempt, unitRandom: 0))
                attempt += 1
            } catch {
                return error
            }
        }
    }

    /// Whether `error` says nothing about the step or compensation that threw it: a retryable store error (a
    /// version conflict that outlasted the executor's retries, an unreachable store) or the task's
    /// cancellation. Such an error is retried or rethrown, never recorded as a failure of the saga.
    public static func isTransient(_ error: any Error) -> Bool {
        if let error = error as? EventStoreError { return error.isRetryable }
        return error is CancellationError
    }

    private func options(sagaID: StreamID, state: SagaState, key: String) throws -> ExecutionOptions {
        ExecutionOptions(
            idempotencyKey: try IdempotencyKey("saga/\(sagaID.rawValue)/\(key)"),
            metadata: EventMetadata(correlationID: state.businessID, causationID: sagaID.rawValue)
        )
    }

    /// Records `progress` in the saga stream.
    /// - Returns: the stream's version after the record (as read when nothing was written).
    @discardableResult
    private func record(_ progress: SagaProgress, in sagaID: StreamID, businessID: String? = nil) async throws -> Int {
        let execution = try await runtime.execute(
            AdvanceSaga(sagaID: sagaID, progress: progress, at: clock.now),
            options: ExecutionOptions(metadata: EventMetadata(correlationID: businessID))
        )
        return execution.result.streamVersions[sagaID] ?? 0
    }
}

/// Where a saga ended up after a run.
public struct SagaReport: Sendable, Hashable {
    /// The saga as folded after the run.
    public var state: SagaState
    /// The saga's phase.
    public var phase: SagaPhase { state.phase }
    /// The saga stream.
    public var sagaID: StreamID { state.sagaID }
}

/// A saga could not be run.
public struct SagaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The saga stream.
    public var sagaID: StreamID
    /// What went wrong.
    public var message: String

    /// `SagaError(<saga>): <message>`.
    public var description: String { "SagaError(\(sagaID)): \(message)" }
}

extension JSONEncoder {
    /// Sorted keys and ISO 8601 dates: the same bytes for the same value.
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}
