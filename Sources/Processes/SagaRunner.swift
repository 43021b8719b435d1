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
        if state.nextAction == .begin {
            let steps = definition.steps()
            let json = try JSONEncoder.sorted.encode(definition)
            try await record(.begin(
                processType: Definition.sagaType, businessID: definition.businessID, stepNames: steps.map(\.name),
                definition: String(decoding: json, as: UTF8.self), retryPolicy: definition.retryPolicy
            ), in: sagaID, businessID: definition.businessID)
        }
        return try await drive(Definition.self, sagaID: sagaID)
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
        try await record(.resumeCompensation(by: operatorName), in: sagaID, businessID: businessID)
        return try await drive(type, sagaID: sagaID)
    }

    /// The saga as its stream tells.
    public func state(of sagaID: StreamID) async throws -> SagaState {
        let snapshot = try await executor.store.read(stream: sagaID)
        var state = SagaState(sagaID: sagaID)
        let codec = EventCodec()
        for stored in snapshot.events {
            if let event = try codec.decode(stored, as: ProcessEvent<SagaEvent>.self) { state.apply(event) }
        }
        return state
    }

    private func drive<Definition: SagaDefinition>(_ type: Definition.Type, sagaID: StreamID) async throws -> SagaReport {
        var state = try await state(of: sagaID)
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
            case .finished, .awaitOperator:
                return SagaReport(state: state)
            case .runStep(let index):
                try await runStep(index, steps[index], state: state, sagaID: sagaID, policy: policy)
            case .compensateStep(let index):
                try await compensateStep(index, steps[index], state: state, sagaID: sagaID, policy: policy)
            }
            state = try await self.state(of: sagaID)
        }
        throw SagaError(sagaID: sagaID, message: "the saga did not settle within \(passes) moves")
    }

    private func runStep(_ index: Int, _ step: SagaStep, state: SagaState, sagaID: StreamID, policy: RetryPolicy) async throws {
        if !state.startedSteps.contains(index) { try await record(.stepStarted(index), in: sagaID, businessID: state.businessID) }
        let options = try options(sagaID: sagaID, state: state, key: "step-\(index)")
        var attempt = 1
        while true {
            do {
                _ = try await step.command.execute(on: executor, options: options)
                try await record(.stepSucceeded(index), in: sagaID, businessID: state.businessID)
                return
            } catch let error as EventStoreError where error.isRetryable {
                // A store that is down says nothing about the step; retry, then give up without a decision.
                guard policy.allowsRetry(afterAttempt: attempt) else { throw error }
                try await sleeper.sleep(for: policy.delay(beforeRetry: attempt, unitRandom: 0))
                attempt += 1
            } catch {
                try await record(.stepFailed(index, reason: String(describing: error)), in: sagaID, businessID: state.businessID)
                return
            }
        }
    }

    private func compensateStep(_ index: Int, _ step: SagaStep, state: SagaState, sagaID: StreamID, policy: RetryPolicy) async throws {
        if !state.compensationsStarted.contains(index) { try await record(.compensationStarted(index), in: sagaID, businessID: state.businessID) }
        let options = try options(sagaID: sagaID, state: state, key: "compensation-\(index)")
        do {
            _ = try await step.compensation.execute(on: executor, options: options)
            try await record(.compensationSucceeded(index), in: sagaID, businessID: state.businessID)
        } catch {
            try await record(.compensationFailed(index, reason: String(describing: error)), in: sagaID, businessID: state.businessID)
            let attempts = state.compensationFailures[index, default: 0] + 1
            if policy.allowsRetry(afterAttempt: attempts) {
                try await sleeper.sleep(for: policy.delay(beforeRetry: attempts, unitRandom: 0))
            }
        }
    }

    private func options(sagaID: StreamID, state: SagaState, key: String) throws -> ExecutionOptions {
        ExecutionOptions(
            idempotencyKey: try IdempotencyKey("saga/\(sagaID.rawValue)/\(key)"),
            metadata: EventMetadata(correlationID: state.businessID, causationID: sagaID.rawValue)
        )
    }

    private func record(_ progress: SagaProgress, in sagaID: StreamID, businessID: String? = nil) async throws {
        _ = try await runtime.execute(
            AdvanceSaga(sagaID: sagaID, progress: progress, at: clock.now),
            options: ExecutionOptions(metadata: EventMetadata(correlationID: businessID))
        )
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
