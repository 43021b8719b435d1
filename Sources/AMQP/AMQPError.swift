/// An error from the AMQP client: what went wrong, where, and whether trying again can help.
///
/// Errors carry the broker's reply code and text when the broker closed a channel or the connection, and the
/// library's status text when the failure was local. They never carry credentials: a URL in an error is
/// always shown without its password.
public struct AMQPError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The URL could not be parsed or names an unsupported option.
        public static let invalidURL = Code("invalidURL")
        /// An argument was out of range or malformed (a too-long name, an unsupported field value).
        public static let invalidArgument = Code("invalidArgument")
        /// Nothing listens at the address, or the host could not be resolved.
        public static let connectionRefused = Code("connectionRefused")
        /// The TCP connection or the AMQP handshake did not finish in time.
        public static let timeout = Code("timeout")
        /// The TLS handshake failed (untrusted certificate, wrong host name, protocol mismatch).
        public static let tlsFailure = Code("tlsFailure")
        /// The broker refused the credentials.
        public static let authenticationFailed = Code("authenticationFailed")
        /// The user may not use the virtual host, or the virtual host does not exist.
        public static let virtualHostNotAllowed = Code("virtualHostNotAllowed")
        /// The broker refused an operation for lack of permission (reply code 403).
        public static let accessRefused = Code("accessRefused")
        /// An exchange or queue named by an operation does not exist (reply code 404).
        public static let notFound = Code("notFound")
        /// A declaration conflicts with what exists, or a precondition failed (reply code 406).
        public static let preconditionFailed = Code("preconditionFailed")
        /// A queue is exclusively used by another connection (reply code 405).
        public static let resourceLocked = Code("resourceLocked")
        /// The broker closed a channel for another reason; see the reply code.
        public static let channelClosed = Code("channelClosed")
        /// The broker closed the connection; see the reply code.
        public static let connectionClosed = Code("connectionClosed")
        /// The connection was lost (socket error, missed heartbeats). Operations in flight have unknown outcome.
        public static let connectionLost = Code("connectionLost")
        /// The connection was closed by this process.
        public static let closedByApplication = Code("closedByApplication")
        /// The broker refused a published message (`basic.nack`): it was not stored.
        public static let messageNacked = Code("messageNacked")
        /// A `mandatory` message could not be routed to any queue and came back (`basic.return`).
        public static let messageReturned = Code("messageReturned")
        /// The delivery belongs to a channel that no longer exists (the connection was recovered since); the
        /// broker redelivers the message, so the acknowledgement has no effect.
        public static let staleDelivery = Code("staleDelivery")
        /// The consumer was cancelled by the broker (its queue was deleted, or a cluster node went down).
        public static let consumerCancelled = Code("consumerCancelled")
        /// The broker sent something the client did not expect.
        public static let protocolError = Code("protocolError")
        /// A lower-level failure from librabbitmq; see the detail.
        public static let libraryError = Code("libraryError")
    }

    /// What kind of failure this is.
    public var code: Code
    /// What the client was doing ("queue.declare orders", "connect 127.0.0.1:5672").
    public var operation: String
    /// The broker's reply code when the broker closed a channel or the connection.
    public var replyCode: UInt16?
    /// The broker's reply text when the broker closed a channel or the connection.
    public var replyText: String?
    /// More detail: librabbitmq's status text, an OS error, a parse error.
    public var detail: String?

    /// Creates an error.
    public init(_ code: Code, operation: String, replyCode: UInt16? = nil, replyText: String? = nil, detail: String? = nil) {
        self.code = code
        self.operation = operation
        self.replyCode = replyCode
        self.replyText = replyText
        self.detail = detail
    }

    /// Whether the same operation may succeed later without any change by the caller: true for lost
    /// connections, timeouts, refused connections and nacks; false for configuration errors such as bad
    /// credentials, missing exchanges or conflicting declarations.
    public var isRetryable: Bool {
        switch code {
        case .connectionLost, .timeout, .connectionRefused, .messageNacked, .staleDelivery, .consumerCancelled:
            return true
        case .connectionClosed:
            // 320 CONNECTION_FORCED (broker shutting down or an operator closing it) is transient.
            return replyCode == 320 || replyCode == 541
        default:
            return false
        }
    }

    public var description: String {
        var text = "AMQP \(code) during \(operation)"
        if let replyCode { text += ": \(replyCode)" }
        if let replyText { text += " \(replyText)" }
        if let detail { text += " (\(detail))" }
        return text
    }

    /// Maps a broker's reply code (from `channel.close` or `connection.close`) to an error.
    static func fromReply(code replyCode: UInt16, text: String, operation: String, onConnection: Bool) -> AMQPError {
        let code: Code
        switch replyCode {
        case 403: code = .accessRefused
        case 404: code = .notFound
        case 405: code = .resourceLocked
        case 406: code = .preconditionFailed
        case 530: code = .virtualHostNotAllowed
        default: code = onConnection ? .connectionClosed : .channelClosed
        }
        return AMQPError(code, operation: operation, replyCode: replyCode, replyText: text)
    }
}
