internal import CRabbitMQ
import Foundation

/// The basic properties of an AMQP message; every field is optional, as on the wire.
public struct AMQPProperties: Sendable, Hashable {
    /// MIME type of the body, e.g. `application/json`.
    public var contentType: String?
    /// Encoding of the body, e.g. `gzip`.
    public var contentEncoding: String?
    /// Application headers.
    public var headers: AMQPTable?
    /// 1 = transient, 2 = persistent.
    public var deliveryMode: UInt8?
    /// Priority 0-9 (for queues declared with `x-max-priority`).
    public var priority: UInt8?
    /// Correlation id.
    public var correlationID: String?
    /// Reply-to queue.
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string.
    public var expiration: String?
    /// Message id.
    public var messageID: String?
    /// Timestamp (second precision on the wire).
    public var timestamp: Date?
    /// Message type name.
    public var type: String?
    /// Publishing user; the broker checks it against the connection's user.
    public var userID: String?
    /// Publishing application.
    public var appID: String?
    /// Deprecated cluster id field, kept for completeness.
    public var clusterID: String?

    /// Properties with nothing set.
    public init() {}

    /// Properties of a persistent message (`delivery_mode` 2).
    public static var persistent: AMQPProperties {
        var properties = AMQPProperties()
        properties.deliveryMode = 2
        return properties
    }

    /// Whether the message is persistent.
    public var isPersistent: Bool { deliveryMode == 2 }

    /// Fills a C properties structure; its memory lives in `arena`.
    func withCProperties<R>(arena: CArena, _ body: (UnsafePointer<amqp_basic_properties_t>) -> R) -> R {
        var c = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func set(_ value: String?, _ flag: Int32, _ field: WritableKeyPath<amqp_basic_properties_t, amqp_bytes_t>) {
            guard let value else { return }
            c[keyPath: field] = arena.bytes(value)
            flags |= UInt32(flag)
        }
        set(contentType, AMQP_BASIC_CONTENT_TYPE_FLAG, \.content_type)
        set(contentEncoding, AMQP_BASIC_CONTENT_ENCODING_FLAG, \.content_encoding)
        set(correlationID, AMQP_BASIC_CORRELATION_ID_FLAG, \.correlation_id)
        set(replyTo, AMQP_BASIC_REPLY_TO_FLAG, \.reply_to)
        set(expiration, AMQP_BASIC_EXPIRATION_FLAG, \.expiration)
        set(messageID, AMQP_BASIC_MESSAGE_ID_FLAG, \.message_id)
        set(type, AMQP_BASIC_TYPE_FLAG, \.type)
        set(userID, AMQP_BASIC_USER_ID_FLAG, \.user_id)
        set(appID, AMQP_BASIC_APP_ID_FLAG, \.app_id)
        set(clusterID, AMQP_BASIC_CLUSTER_ID_FLAG, \.cluster_id)
        if let headers {
            c.headers = arena.table(headers)
            flags |= UInt32(AMQP_BASIC_HEADERS_FLAG)
        }
        if let deliveryMode {
            c.delivery_mode = deliveryMode
            flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        }
        if let priority {
            c.priority = priority
            flags |= UInt32(AMQP_BASIC_PRIORITY_FLAG)
        }
        if let timestamp {
            c.timestamp = UInt64(max(0, timestamp.timeIntervalSince1970.rounded(.down)))
            flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        c._flags = flags
        return withUnsafePointer(to: &c) { body($0) }
    }

    /// Copies a C properties structure.
    init(_ c: UnsafePointer<amqp_basic_properties_t>) {
        let p = c.pointee
        let flags = p._flags
        func get(_ flag: Int32, _ value: amqp_bytes_t) -> String? {
            flags & UInt32(flag) != 0 ? value.string : nil
        }
        contentType = get(AMQP_BASIC_CONTENT_TYPE_FLAG, p.content_type)
        contentEncoding = get(AMQP_BASIC_CONTENT_ENCODING_FLAG, p.content_encoding)
        correlationID = get(AMQP_BASIC_CORRELATION_ID_FLAG, p.correlation_id)
        replyTo = get(AMQP_BASIC_REPLY_TO_FLAG, p.reply_to)
        expiration = get(AMQP_BASIC_EXPIRATION_FLAG, p.expiration)
        messageID = get(AMQP_BASIC_MESSAGE_ID_FLAG, p.message_id)
        type = get(AMQP_BASIC_TYPE_FLAG, p.type)
        userID = get(AMQP_BASIC_USER_ID_FLAG, p.user_id)
        appID = get(AMQP_BASIC_APP_ID_FLAG, p.app_id)
        clusterID = get(AMQP_BASIC_CLUSTER_ID_FLAG, p.cluster_id)
        if flags & UInt32(AMQP_BASIC_HEADERS_FLAG) != 0 { headers = p.headers.swiftTable }
        if flags & UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG) != 0 { deliveryMode = p.delivery_mode }
        if flags & UInt32(AMQP_BASIC_PRIORITY_FLAG) != 0 { priority = p.priority }
        if flags & UInt32(AMQP_BASIC_TIMESTAMP_FLAG) != 0 {
            timestamp = Date(timeIntervalSince1970: TimeInterval(p.timestamp))
        }
    }
}
