import Foundation

/// A JSON pointer (RFC 6901), e.g. `/order/id`, used to find ids in the bodies of foreign messages.
public struct JSONPointer: Sendable, Hashable, CustomStringConvertible {
    /// The unescaped reference tokens.
    public let tokens: [String]

    /// Parses a pointer; nil unless it is empty or starts with `/`.
    public init?(_ text: String) {
        if text.isEmpty {
            tokens = []
            return
        }
        guard text.hasPrefix("/") else { return nil }
        tokens = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }

    public var description: String {
        tokens.map { "/" + $0.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1") }.joined()
    }

    /// The value the pointer leads to in a parsed JSON document (`JSONSerialization` output), if any.
    public func resolve(in document: Any) -> Any? {
        var current: Any = document
        for token in tokens {
            if let object = current as? [String: Any] {
                guard let next = object[token] else { return nil }
                current = next
            } else if let array = current as? [Any] {
                guard let index = Int(token), array.indices.contains(index) else { return nil }
                current = array[index]
            } else {
                return nil
            }
        }
        return current
    }

    /// The value as a string id: strings as they are, integers in decimal; nil for anything else (booleans and
    /// numbers with a fraction or an exponent included, which `JSONSerialization` would also let pass as `Int`).
    public func stringValue(in document: Any) -> String? {
        switch resolve(in: document) {
        case let text as String: return text
        case let number as NSNumber:
            // `JSONSerialization` gives booleans as `c` (char) and numbers written with a fraction as `d`.
            guard !["c", "d", "f"].contains(String(cString: number.objCType)), let integer = Int(exactly: number.int64Value),
                  number == NSNumber(value: integer) else { return nil }
            return String(integer)
        default: return nil
        }
    }
}
