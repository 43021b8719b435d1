import Foundation
import Yams

/// The repository's files as the deployment tests read them: text, YAML documents and JSON, by path relative
/// to the repository root.
enum RepositoryFiles {
    /// The repository root: three levels above this file (Tests/DeployTests/RepositoryFiles.swift).
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func url(_ path: String) -> URL {
        root.appendingPathComponent(path)
    }

    static func text(_ path: String) throws -> String {
        do {
            return try String(contentsOf: url(path), encoding: .utf8)
        } catch {
            throw Missing(description: "cannot read \(path): \(error)")
        }
    }

    /// Every YAML document of a file (a file may hold several, separated by `---`).
    static func yamlDocuments(_ path: String) throws -> [YAMLValue] {
        try YAMLValue.documents(text(path))
    }

    /// The single YAML document of a file.
    static func yaml(_ path: String) throws -> YAMLValue {
        let documents = try yamlDocuments(path)
        guard documents.count == 1, let document = documents.first else {
            throw Missing(description: "\(path) holds \(documents.count) YAML documents, not one")
        }
        return document
    }

    static func json(_ path: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(path)))
    }

    /// The paths, relative to the root, of the files under `folder` whose names end with one of `suffixes`.
    static func files(under folder: String, endingWith suffixes: [String]) -> [String] {
        let base = url(folder)
        guard let enumerator = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { return [] }
        var found: [String] = []
        for case let file as URL in enumerator where suffixes.contains(where: { file.lastPathComponent.hasSuffix($0) }) {
            found.append(folder + "/" + file.path.dropFirst(base.path.count + 1))
        }
        return found.sorted()
    }
}

/// A parsed YAML value with the few accessors the checks need; a missing key or a value of another kind reads
/// as `nil`, so every check states what it expected.
struct YAMLValue: @unchecked Sendable, CustomStringConvertible {
    let raw: Any

    init(_ raw: Any) {
        self.raw = raw
    }

    /// Every document of a YAML text; a syntax error anywhere throws (`load_all`'s sequence would end quietly).
    static func documents(_ text: String) throws -> [YAMLValue] {
        let parser = try Parser(yaml: text)
        var documents: [YAMLValue] = []
        while let node = try parser.nextRoot() {
            documents.append(YAMLValue(node.any))
        }
        return documents
    }

    static func parse(_ text: String) throws -> YAMLValue {
        try YAMLValue(Yams.load(yaml: text) ?? NSNull())
    }

    subscript(key: String) -> YAMLValue? {
        if let mapping = raw as? [String: Any] { return mapping[key].map(YAMLValue.init) }
        if let mapping = raw as? [AnyHashable: Any] { return mapping[AnyHashable(key)].map(YAMLValue.init) }
        return nil
    }

    var mapping: [String: YAMLValue]? {
        if let mapping = raw as? [String: Any] { return mapping.mapValues(YAMLValue.init) }
        if let mapping = raw as? [AnyHashable: Any] {
            var result: [String: YAMLValue] = [:]
            for (key, value) in mapping { result["\(key.base)"] = YAMLValue(value) }
            return result
        }
        return nil
    }

    var array: [YAMLValue]? {
        (raw as? [Any])?.map(YAMLValue.init)
    }

    var string: String? {
        raw as? String
    }

    var int: Int? {
        if let value = raw as? Int { return value }
        if let text = raw as? String { return Int(text) }
        return nil
    }

    /// A scalar as text (numbers and booleans too), as environment values are.
    var scalarText: String? {
        switch raw {
        case let text as String: return text
        case let number as Int: return String(number)
        case let flag as Bool: return String(flag)
        case let number as Double: return String(number)
        default: return nil
        }
    }

    var description: String { "\(raw)" }
}
