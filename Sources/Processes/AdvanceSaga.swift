import EventCore
import Foundation

/// What a saga runner observed and wants recorded.
public enum SagaProgress: Sendable, Hashable {
    /// Start the saga with these steps and this definition (JSON).
    case begin(processType: String, businessID: String, stepNames: [String], definition: String, retryPolicy: RetryPolicy)
    /// Step `index` is about to run.
    case stepStarted(Int)
    /// Step `index` committed.
    case stepSucceeded(Int)
    /// Step `index` failed for `reason`.
    case stepFailed(Int, reason: String)
    /// The compensation of step `index` is about to run.
    case compensationStarted(Int)
    /// The compensation of step `index` committed.
    case compensationSucceeded(Int)
    /// The compensation of step `index` failed for `reason`.
    case compensationFailed(Int, reason: String)
    /// An operator asks for compensation to be tried again.
    case resumeCompensation(by: String)
}

/// Records one observation of a saga runner in the saga stream, after checking it against the saga's state,
/// together with what follows from it: compensation after a failed step, completion after the last step,
/// `CompensationCompleted` after the last compensation, needs-attention when compensation retries run out.
///
/// An observation that no longer fits the state (another runner recorded it first) writes nothing, so two
/// runners on one saga cannot record a step twice.
public struct AdvanceSaga: Command {
    /// The saga stream.
    public var sagaID: StreamID
    /// What to record.
    public var progress: SagaProgress
    /// When.
    public var now: Date

    /// Creates the command.
    public init(sagaID: StreamID, progress: SagaProgress, at now: Date) {
        self.sagaID = sagaID
        self.progress = progress
        self.now = now
    }

    /// The saga stream.
    public var readStreams: [StreamID] { [sagaID] }
    /// A saga with no events.
    public var initialState: SagaState { SagaState(sagaID: sagaID) }
    /// Folds one saga event.
    public func apply(_ state: inout SagaState, _ event: ProcessEvent<SagaEvent>) {
        state.apply(event)
    }

    /// See the type's description.
    public func handle(_ state: SagaState, context: CommandContext) throws -> [StreamWrite<ProcessEvent<SagaEvent>>] {
        var decider = SagaDecider(state: state, now: now)
        return try decider.decide(progress).map { try context.write($0, to: sagaID) }
    }
}

/// The decisions of ``AdvanceSaga``, on a copy of the state that follows every event decided.
struct SagaDecider {
    var state: SagaState
    let now: Date
    var events: [ProcessEvent<SagaEvent>] = []

    init(state: SagaState, now: Date) {
        self.state = state
        self.now = now
    }

    mutating func record(_ event: ProcessEvent<SagaEvent>) {
        events.append(event)
        state.apply(event)
    }

    mutating func decide(_ progress: SagaProgress) -> [ProcessEvent<SagaEvent>] {
        if case .begin(let processType, let businessID, let names, let definition, let policy) = progress {
            guard state.lifecycle.status == .notStarted else { return [] }
            record(.lifecycle(.started(ProcessStarted(processType: processType, businessID: businessID, startedAt: now, deadline: nil, retryPolicy: policy))))
            record(.domain(.defined(SagaDefined(stepNames: names, definition: definition))))
            if names.isEmpty { complete() }
            return events
        }
        guard state.lifecycle.status == .running else { return [] }
        switch progress {
        case .begin:
            return []
        case .stepStarted(let index):
            guard state.currentStep == index, !state.startedSteps.contains(index) else { return [] }
            record(.domain(.stepStarted(reference(index))))
        case .stepSucceeded(let index):
            guard state.currentStep == index else { return [] }
            record(.domain(.stepCompleted(reference(index))))
            if state.currentStep == nil { complete() }
        case .stepFailed(let index, let reason):
            guard state.currentStep == index else { return [] }
            let failure = SagaStepFailure(index: index, name: state.stepNames[index], reason: reason)
            record(.domain(.stepFailed(failure)))
            record(.domain(.compensationStarted(failure)))
            finishCompensationIfDone()
        case .compensationStarted(let index):
            guard state.attention == nil, state.stepToCompensate == index, !state.compensationsStarted.contains(index) else { return [] }
            record(.domain(.compensationStepStarted(reference(index))))
        case .compensationSucceeded(let index):
            guard state.stepToCompensate == index else { return [] }
            record(.domain(.compensationStepCompleted(reference(index))))
            finishCompensationIfDone()
        case .compensationFailed(let index, let reason):
            guard state.attention == nil, state.stepToCompensate == index else { return [] }
            let attempts = state.compensationFailures[index, default: 0] + 1
            let failure = SagaCompensationFailure(index: index, stepName: state.stepNames[index], attempts: attempts, reason: reason)
            record(.domain(.compensationStepFailed(failure)))
            if attempts > (state.lifecycle.started?.retryPolicy.maxRetries ?? 0) {
                record(.domain(.needsAttention(failure)))
            }
        case .resumeCompensation(let who):
            guard state.attention != nil else { return [] }
            record(.domain(.compensationResumed(SagaCompensationResumed(resumedBy: who))))
        }
        return events
    }

    private func reference(_ index: Int) -> SagaStepReference {
        SagaStepReference(index: index, name: state.stepNames[index])
    }

    private mutating func complete() {
        guard let started = state.lifecycle.started else { return }
        record(.lifecycle(.completed(ProcessCompleted(processType: started.processType, startedAt: started.startedAt, completedAt: now))))
    }

    private mutating func finishCompensationIfDone() {
        guard state.compensationMode, state.stepToCompensate == nil, let started = state.lifecycle.started else { return }
        record(.domain(.compensationCompleted(SagaCompensationCompleted(compensatedSteps: state.compensatedSteps))))
        let failure = state.failure.map { "step \($0.name) failed: \($0.reason)" } ?? "a step failed"
        let reason = state.compensatedSteps.isEmpty ? "\(failure); nothing to compensate" : "\(failure); compensated \(state.compensatedSteps.joined(separator: ", "))"
        record(.lifecycle(.failed(ProcessFailed(processType: started.processType, reason: reason, startedAt: started.startedAt, failedAt: now))))
    }
}
