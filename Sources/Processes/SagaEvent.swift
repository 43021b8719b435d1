import EventCore
import Foundation

/// The saga's own events, stored in its stream beside the lifecycle events (a saga is a process: it starts,
/// and completes or fails, like any other).
///
/// Each case is stored under its type name with the fields of its value, inside a ``ProcessEvent`` envelope.
public enum SagaEvent: DomainEvent, Hashable {
    /// The steps, by name, and the definition the saga was started with.
    case defined(SagaDefined)
    /// A step's command is about to run.
    case stepStarted(SagaStepReference)
    /// A step's command committed.
    case stepCompleted(SagaStepReference)
    /// A step's command failed; compensation follows.
    case stepFailed(SagaStepFailure)
    /// The saga turned to compensating its completed steps, newest first.
    case compensationStarted(SagaStepFailure)
    /// A compensating command is about to run.
    case compensationStepStarted(SagaStepReference)
    /// A compensating command committed.
    case compensationStepCompleted(SagaStepReference)
    /// A compensating command failed; it is retried by the saga's policy.
    case compensationStepFailed(SagaCompensationFailure)
    /// A compensating command failed more often than the policy allows: an operator must look.
    case needsAttention(SagaCompensationFailure)
    /// An operator asked for compensation to be tried again.
    case compensationResumed(SagaCompensationResumed)
    /// Every completed step was compensated.
    case compensationCompleted(SagaCompensationCompleted)

    /// The stored type names.
    public enum TypeName {
        /// `SagaDefined`.
        public static let defined = "SagaDefined"
        /// `SagaStepStarted`.
        public static let stepStarted = "SagaStepStarted"
        /// `SagaStepCompleted`.
        public static let stepCompleted = "SagaStepCompleted"
        /// `SagaStepFailed`.
        public static let stepFailed = "SagaStepFailed"
        /// `CompensationStarted`.
        public static let compensationStarted = "CompensationStarted"
        /// `CompensationStepStarted`.
        public static let compensationStepStarted = "CompensationStepStarted"
        /// `CompensationStepCompleted`.
        public static let compensationStepCompleted = "CompensationStepCompleted"
        /// `CompensationStepFailed`.
        public static let compensationStepFailed = "CompensationStepFailed"
        /// `SagaNeedsAttention`.
        public static let needsAttention = "SagaNeedsAttention"
        /// `CompensationResumed`.
        public static let compensationResumed = "CompensationResumed"
        /// `CompensationCompleted`.
        public static let compensationCompleted = "CompensationCompleted"
        /// All of them.
        public static let all: Set<String> = [
            defined, stepStarted, stepCompleted, stepFailed, compensationStarted, compensationStepStarted,
            compensationStepCompleted, compensationStepFailed, needsAttention, compensationResumed, compensationCompleted,
        ]
    }

    /// The stored type name.
    public var eventType: String {
        switch self {
        case .defined: TypeName.defined
        case .stepStarted: TypeName.stepStarted
        case .stepCompleted: TypeName.stepCompleted
        case .stepFailed: TypeName.stepFailed
        case .compensationStarted: TypeName.compensationStarted
        case .compensationStepStarted: TypeName.compensationStepStarted
        case .compensationStepCompleted: TypeName.compensationStepCompleted
        case .compensationStepFailed: TypeName.compensationStepFailed
        case .needsAttention: TypeName.needsAttention
        case .compensationResumed: TypeName.compensationResumed
        case .compensationCompleted: TypeName.compensationCompleted
        }
    }

    /// The saga's type names only.
    public static func handles(eventType: String) -> Bool { TypeName.all.contains(eventType) }

    /// Decodes the fields of the case named by the envelope key (the last element of the coding path).
    public init(from decoder: any Decoder) throws {
        let name = decoder.codingPath.last?.stringValue ?? ""
        switch name {
        case TypeName.defined: self = .defined(try SagaDefined(from: decoder))
        case TypeName.stepStarted: self = .stepStarted(try SagaStepReference(from: decoder))
        case TypeName.stepCompleted: self = .stepCompleted(try SagaStepReference(from: decoder))
        case TypeName.stepFailed: self = .stepFailed(try SagaStepFailure(from: decoder))
        case TypeName.compensationStarted: self = .compensationStarted(try SagaStepFailure(from: decoder))
        case TypeName.compensationStepStarted: self = .compensationStepStarted(try SagaStepReference(from: decoder))
        case TypeName.compensationStepCompleted: self = .compensationStepCompleted(try SagaStepReference(from: decoder))
        case TypeName.compensationStepFailed: self = .compensationStepFailed(try SagaCompensationFailure(from: decoder))
        case TypeName.needsAttention: self = .needsAttention(try SagaCompensationFailure(from: decoder))
        case TypeName.compensationResumed: self = .compensationResumed(try SagaCompensationResumed(from: decoder))
        case TypeName.compensationCompleted: self = .compensationCompleted(try SagaCompensationCompleted(from: decoder))
        default:
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "\(name.debugDescription) is not a saga event"))
        }
    }

    /// Encodes the fields of the case's value.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .defined(let value): try value.encode(to: encoder)
        case .stepStarted(let value), .stepCompleted(let value), .compensationStepStarted(let value), .compensationStepCompleted(let value):
            try value.encode(to: encoder)
        case .stepFailed(let value), .compensationStarted(let value): try value.encode(to: encoder)
        case .compensationStepFailed(let value), .needsAttention(let value): try value.encode(to: encoder)
        case .compensationResumed(let value): try value.encode(to: encoder)
        case .compensationCompleted(let value): try value.encode(to: encoder)
        }
    }
}

/// The steps of a saga and the definition it was started with.
public struct SagaDefined: Codable, Sendable, Hashable {
    /// The step names, in order.
    public var stepNames: [String]
    /// The saga definition as JSON, from which a runner rebuilds the steps after a restart.
    public var definition: String

    /// Creates the value.
    public init(stepNames: [String], definition: String) {
        self.stepNames = stepNames
        self.definition = definition
    }
}

/// A step, by position and name.
public struct SagaStepReference: Codable, Sendable, Hashable {
    /// The step's position, from 0.
    public var index: Int
    /// The step's name.
    public var name: String

    /// Creates the value.
    public init(index: Int, name: String) {
        self.index = index
        self.name = name
    }
}

/// A step whose command failed.
public struct SagaStepFailure: Codable, Sendable, Hashable {
    /// The step's position, from 0.
    public var index: Int
    /// The step's name.
    public var name: String
    /// Why it failed.
    public var reason: String

    /// Creates the value.
    public init(index: Int, name: String, reason: String) {
        self.index = index
        self.name = name
        self.reason = reason
    }
}

/// A compensating command that failed.
public struct SagaCompensationFailure: Codable, Sendable, Hashable {
    /// The step's position, from 0.
    public var index: Int
    /// The step's name.
    public var stepName: String
    /// The failed attempts so far (since the last resumption).
    public var attempts: Int
    /// Why the latest attempt failed.
    public var reason: String

    /// Creates the value.
    public init(index: Int, stepName: String, attempts: Int, reason: String) {
        self.index = index
        self.stepName = stepName
        self.attempts = attempts
        self.reason = reason
    }
}

/// An operator resumed compensation.
public struct SagaCompensationResumed: Codable, Sendable, Hashable {
    /// Who, for the audit trail.
    public var resumedBy: String

    /// Creates the value.
    public init(resumedBy: String) {
        self.resumedBy = resumedBy
    }
}

/// Every completed step was compensated.
public struct SagaCompensationCompleted: Codable, Sendable, Hashable {
    /// The compensated steps, in the order they were compensated.
    public var compensatedSteps: [String]

    /// Creates the value.
    public init(compensatedSteps: [String]) {
        self.compensatedSteps = compensatedSteps
    }
}
