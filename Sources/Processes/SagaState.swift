import EventCore
import Foundation

/// Where one step of a saga stands.
public enum StepStatus: String, Sendable, Hashable, Codable {
    /// Not run yet (or started and not finished).
    case pending
    /// Its command committed.
    case completed
    /// Its command failed.
    case failed
    /// Its compensating command committed.
    case compensated
}

/// Where a saga stands as a whole.
public enum SagaPhase: String, Sendable, Hashable, Codable {
    /// No events yet.
    case notStarted
    /// Running its steps forward.
    case running
    /// Compensating completed steps, newest first.
    case compensating
    /// A compensation failed more often than allowed; an operator must resume it.
    case needsAttention
    /// Every step completed.
    case completed
    /// A step failed and every completed step was compensated.
    case compensated
}

/// What a saga runner does next.
public enum SagaNextAction: Sendable, Hashable {
    /// Record the saga's start.
    case begin
    /// Run step `index` forward.
    case runStep(Int)
    /// Run the compensation of step `index`.
    case compensateStep(Int)
    /// Nothing until an operator resumes compensation.
    case awaitOperator
    /// The saga ended.
    case finished
}

/// A saga folded from its stream. The pure state machine behind ``AdvanceSaga`` and ``SagaRunner``.
public struct SagaState: Sendable, Hashable {
    /// Start, end.
    public private(set) var lifecycle: ProcessLifecycle
    /// The steps by name.
    public private(set) var stepNames: [String] = []
    /// The definition as JSON.
    public private(set) var definition: String?
    /// Each step's status.
    public private(set) var statuses: [StepStatus] = []
    /// Steps whose forward command was started.
    public private(set) var startedSteps: Set<Int> = []
    /// Steps whose compensation was started.
    public private(set) var compensationsStarted: Set<Int> = []
    /// Whether the saga is compensating.
    public private(set) var compensationMode = false
    /// The step failure that turned the saga to compensation.
    public private(set) var failure: SagaStepFailure?
    /// Failed compensation attempts per step since the last resumption.
    public private(set) var compensationFailures: [Int: Int] = [:]
    /// Set while the saga needs an operator.
    public private(set) var attention: SagaCompensationFailure?
    /// The steps compensated, in order.
    public private(set) var compensatedSteps: [String] = []
    /// Whether `CompensationCompleted` was recorded.
    public private(set) var compensationCompleted = false

    /// A saga with no events.
    public init(sagaID: StreamID) {
        lifecycle = ProcessLifecycle(processID: sagaID)
    }

    /// The saga stream.
    public var sagaID: StreamID { lifecycle.processID }

    /// The business id the saga is about, once started.
    public var businessID: String? { lifecycle.started?.businessID }

    /// Folds one event of the saga stream.
    public mutating func apply(_ event: ProcessEvent<SagaEvent>) {
        switch event {
        case .lifecycle(let lifecycleEvent):
            lifecycle.apply(lifecycleEvent)
        case .domain(let sagaEvent):
            apply(sagaEvent)
        }
    }

    private mutating func apply(_ event: SagaEvent) {
        switch event {
        case .defined(let defined):
            stepNames = defined.stepNames
            definition = defined.definition
            statuses = Array(repeating: .pending, count: defined.stepNames.count)
        case .stepStarted(let step):
            startedSteps.insert(step.index)
        case .stepCompleted(let step):
            setStatus(.completed, of: step.index)
        case .stepFailed(let failure):
            setStatus(.failed, of: failure.index)
        case .compensationStarted(let failure):
            compensationMode = true
            self.failure = failure
        case .compensationStepStarted(let step):
            compensationsStarted.insert(step.index)
        case .compensationStepCompleted(let step):
            setStatus(.compensated, of: step.index)
            compensatedSteps.append(step.name)
        case .compensationStepFailed(let failure):
            compensationFailures[failure.index] = failure.attempts
        case .needsAttention(let failure):
            attention = failure
        case .compensationResumed:
            if let attention { compensationFailures[attention.index] = 0 }
            attention = nil
        case .compensationCompleted:
            compensationCompleted = true
        }
    }

    private mutating func setStatus(_ status: StepStatus, of index: Int) {
        if statuses.indices.contains(index) { statuses[index] = status }
    }

    /// The first step not completed, while running forward.
    public var currentStep: Int? {
        compensationMode ? nil : statuses.firstIndex(of: .pending)
    }

    /// The next step to compensate: the newest completed one.
    public var stepToCompensate: Int? {
        compensationMode ? statuses.lastIndex(of: .completed) : nil
    }

    /// Where the saga stands.
    public var phase: SagaPhase {
        switch lifecycle.status {
        case .notStarted: return .notStarted
        case .completed: return .completed
        case .failed: return compensationCompleted ? .compensated : .compensating
        case .running:
            if attention != nil { return .needsAttention }
            return compensationMode ? .compensating : .running
        }
    }

    /// What a runner does next.
    public var nextAction: SagaNextAction {
        switch lifecycle.status {
        case .notStarted: return .begin
        case .completed, .failed: return .finished
        case .running: break
        }
        if attention != nil { return .awaitOperator }
        if compensationMode {
            return stepToCompensate.map(SagaNextAction.compensateStep) ?? .finished
        }
        return currentStep.map(SagaNextAction.runStep) ?? .finished
    }
}
