import Foundation

/// Why an operator command refused to run or stopped: bad input, a missing queue, a store or broker problem.
///
/// Commands check their input before they touch anything, so an error with a code other than
/// ``Code/interrupted`` or ``Code/publishFailed`` means nothing was changed.
public struct OperationsError: Error, Sendable, CustomStringConvertible {
    /// The kind of problem.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name.
        public let rawValue: String
        private init(_ rawValue: String) { self.rawValue = rawValue }
        /// `rawValue`.
        public var description: String { rawValue }

        /// An argument that cannot be understood (a time, a filter, a rate).
        public static let invalidArgument = Code("invalid-argument")
        /// A queue, exchange, message or process that does not exist.
        public static let notFound = Code("not-found")
        /// A global position beyond the store's last event.
        public static let positionPastEnd = Code("position-past-end")
        /// The broker or the store could not be reached.
        public static let unreachable = Code("unreachable")
        /// The broker refused or lost a publish; work before it was confirmed.
        public static let publishFailed = Code("publish-failed")
        /// A checkpoint file that belongs to another selection or cannot be read.
        public static let checkpointMismatch = Code("checkpoint-mismatch")
        /// The operation is not possible for this object (retrying a process that needs no retry).
        public static let notApplicable = Code("not-applicable")
    }

    /// The kind of problem.
    public var code: Code
    /// What went wrong, for the operator.
    public var message: String

    /// An error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `message`, with no secret in it.
    public var description: String { message }
}
