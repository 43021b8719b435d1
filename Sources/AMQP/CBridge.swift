internal import CRabbitMQ
import Foundation

/// Memory for the C structures of one library call. Everything allocated is freed with the arena, so an
/// arena must outlive the call that reads its structures and nothing more.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = malloc(max(1, MemoryLayout<T>.stride * count))!
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    func bytes(_ text: String) -> amqp_bytes_t {
        var text = text
        return text.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    func bytes<C: Collection>(_ data: C) -> amqp_bytes_t where C.Element == UInt8 {
        let count = data.count
        let pointer = allocate(UInt8.self, count: count)
        _ = UnsafeMutableBufferPointer(start: pointer, count: count).initialize(from: data)
        return amqp_bytes_t(len: count, bytes: UnsafeMutableRawPointer(pointer))
    }

    func bytes(_ buffer: UnsafeRawBufferPointer) -> amqp_bytes_t {
        let pointer = allocate(UInt8.self, count: buffer.count)
        if buffer.count > 0 { memcpy(pointer, buffer.baseAddress!, buffer.count) }
        return amqp_bytes_t(len: buffer.count, bytes: UnsafeMutableRawPointer(pointer))
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(amqp_table_entry_t.self, count: table.count)
        for (index, key) in table.keys.sorted().enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: value(table[key]!))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func value(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        func kind(_ k: amqp_field_value_kind_t) { field.kind = UInt8(k.rawValue) }
        switch value {
        case .bool(let v): kind(AMQP_FIELD_KIND_BOOLEAN); field.value.boolean = v ? 1 : 0
        case .int8(let v): kind(AMQP_FIELD_KIND_I8); field.value.i8 = v
        case .uint8(let v): kind(AMQP_FIELD_KIND_U8); field.value.u8 = v
        case .int16(let v): kind(AMQP_FIELD_KIND_I16); field.value.i16 = v
        case .uint16(let v): kind(AMQP_FIELD_KIND_U16); field.value.u16 = v
        case .int32(let v): kind(AMQP_FIELD_KIND_I32); field.value.i32 = v
        case .uint32(let v): kind(AMQP_FIELD_KIND_U32); field.value.u32 = v
        case .int64(let v): kind(AMQP_FIELD_KIND_I64); field.value.i64 = v
        case .uint64(let v): kind(AMQP_FIELD_KIND_U64); field.value.u64 = v
        case .float(let v): kind(AMQP_FIELD_KIND_F32); field.value.f32 = v
        case .double(let v): kind(AMQP_FIELD_KIND_F64); field.value.f64 = v
        case .decimal(let scale, let v):
            kind(AMQP_FIELD_KIND_DECIMAL)
            field.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .string(let v): kind(AMQP_FIELD_KIND_UTF8); field.value.bytes = bytes(v)
        case .bytes(let v): kind(AMQP_FIELD_KIND_BYTES); field.value.bytes = bytes(v)
        case .array(let items):
            kind(AMQP_FIELD_KIND_ARRAY)
            let entries = allocate(amqp_field_value_t.self, count: items.count)
            for (index, item) in items.enumerated() { entries[index] = self.value(item) }
            field.value.array = amqp_array_t(num_entries: Int32(items.count), entries: entries)
        case .timestamp(let date):
            kind(AMQP_FIELD_KIND_TIMESTAMP)
            field.value.u64 = UInt64(max(0, date.timeIntervalSince1970.rounded(.down)))
        case .table(let nested): kind(AMQP_FIELD_KIND_TABLE); field.value.table = table(nested)
        case .void: kind(AMQP_FIELD_KIND_VOID)
        }
        return field
    }
}

extension amqp_bytes_t {
    /// A copy of the bytes.
    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: len))
    }

    /// A copy of the bytes as Data.
    var data: Data {
        guard len > 0, let bytes else { return Data() }
        return Data(bytes: bytes, count: len)
    }

    /// The bytes as text; invalid UTF-8 is repaired rather than dropped.
    var string: String {
        guard len > 0, let bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self)
    }
}

extension AMQPProperties {
    /// Tables and arrays in headers nested deeper than this are cut off when a message is read: the copy has
    /// `.void` where the deeper levels were. A broker passes on any nesting a frame can hold (some 26,000 levels
    /// in 128 KiB), and a copy that deep would exhaust the stack of whichever thread copies, compares or releases it.
    public static let maximumHeaderNesting = 32
}

extension amqp_table_t {
    /// A Swift copy of the table.
    var swiftTable: AMQPTable { swiftTable(depth: 1) }

    func swiftTable(depth: Int) -> AMQPTable {
        var result: AMQPTable = [:]
        guard num_entries > 0, let entries else { return result }
        for index in 0..<Int(num_entries) {
            result[entries[index].key.string] = entries[index].value.swiftValue(depth: depth)
        }
        return result
    }
}

extension amqp_field_value_t {
    /// A Swift copy of the value, which is `depth` levels deep in its table (1 for the table's own entries).
    func swiftValue(depth: Int) -> AMQPFieldValue {
        switch amqp_field_value_kind_t(rawValue: UInt32(kind)) {
        case AMQP_FIELD_KIND_BOOLEAN: return .bool(value.boolean != 0)
        case AMQP_FIELD_KIND_I8: return .int8(value.i8)
        case AMQP_FIELD_KIND_U8: return .uint8(value.u8)
        case AMQP_FIELD_KIND_I16: return .int16(value.i16)
        case AMQP_FIELD_KIND_U16: return .uint16(value.u16)
        case AMQP_FIELD_KIND_I32: return .int32(value.i32)
        case AMQP_FIELD_KIND_U32: return .uint32(value.u32)
        case AMQP_FIELD_KIND_I64: return .int64(value.i64)
        case AMQP_FIELD_KIND_U64: return .uint64(value.u64)
        case AMQP_FIELD_KIND_F32: return .float(value.f32)
        case AMQP_FIELD_KIND_F64: return .double(value.f64)
        case AMQP_FIELD_KIND_DECIMAL: return .decimal(scale: value.decimal.decimals, value: value.decimal.value)
        case AMQP_FIELD_KIND_UTF8:
            let raw = value.bytes.array
            if let text = String(validating: raw, as: UTF8.self) { return .string(text) }
            return .bytes(raw)
        case AMQP_FIELD_KIND_BYTES: return .bytes(value.bytes.array)
        case AMQP_FIELD_KIND_ARRAY:
            guard depth < AMQPProperties.maximumHeaderNesting else { return .void }
            let array = value.array
            guard array.num_entries > 0, let entries = array.entries else { return .array([]) }
            return .array((0..<Int(array.num_entries)).map { entries[$0].swiftValue(depth: depth + 1) })
        case AMQP_FIELD_KIND_TIMESTAMP: return .timestamp(Date(timeIntervalSince1970: TimeInterval(value.u64)))
        case AMQP_FIELD_KIND_TABLE:
            guard depth < AMQPProperties.maximumHeaderNesting else { return .void }
            return .table(value.table.swiftTable(depth: depth + 1))
        default: return .void
        }
    }
}
