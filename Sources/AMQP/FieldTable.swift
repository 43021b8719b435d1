import Foundation

/// An AMQP field table: message headers and the arguments of declarations.
public typealias AMQPTable = [String: AMQPFieldValue]

/// A value in an AMQP field table, covering every field type of AMQP 0-9-1 as RabbitMQ speaks it.
///
/// RabbitMQ does not accept every unsigned type on the wire: use the signed types for numbers that go to the
/// broker, as its own clients do.
public enum AMQPFieldValue: Sendable, Hashable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
    case double(Double)
    /// A decimal: `value` × 10^-`scale`.
    case decimal(scale: UInt8, value: UInt32)
    /// A long string holding UTF-8 text.
    case string(String)
    /// A byte array, or a long string that is not valid UTF-8.
    case bytes([UInt8])
    case array([AMQPFieldValue])
    /// A timestamp with second precision (the wire format's).
    case timestamp(Date)
    case table(AMQPTable)
    /// A field with no value.
    case void

    /// The value as text, when it is a string (or bytes that are UTF-8).
    public var stringValue: String? {
        switch self {
        case .string(let text): return text
        case .bytes(let bytes): return String(validating: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The value as a signed integer, when it is any integer type that fits.
    public var intValue: Int64? {
        switch self {
        case .int8(let v): return Int64(v)
        case .uint8(let v): return Int64(v)
        case .int16(let v): return Int64(v)
        case .uint16(let v): return Int64(v)
        case .int32(let v): return Int64(v)
        case .uint32(let v): return Int64(v)
        case .int64(let v): return v
        case .uint64(let v): return Int64(exactly: v)
        default: return nil
        }
    }

    /// The value as a table, when it is one.
    public var tableValue: AMQPTable? {
        if case .table(let table) = self { return table }
        return nil
    }

    /// The value as an array, when it is one.
    public var arrayValue: [AMQPFieldValue]? {
        if case .array(let array) = self { return array }
        return nil
    }
}

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    /// A string literal is a long string.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An integer literal is a signed 64-bit integer.
    public init(integerLiteral value: Int64) { self = .int64(value) }
    /// A Boolean literal is a Boolean.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// A floating-point literal is a double.
    public init(floatLiteral value: Double) { self = .double(value) }
    /// An array literal is a field array.
    public init(arrayLiteral elements: AMQPFieldValue...) { self = .array(elements) }
    /// A dictionary literal is a nested table.
    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) {
        self = .table(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
