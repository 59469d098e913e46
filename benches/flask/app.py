"""The original users service (the seed article's Flask app), for the record
in the benchmark table. Its GET is kept as written; its POST, which crashed
(a list defined only in the GET branch), appends to a module-level list.
Served by Flask's development server, as the original runs it, on loopback.

Usage: app.py PORT
"""
import sys

from flask import Flask, jsonify, request

app = Flask(__name__)
created = []


@app.route('/users', methods=['GET', 'POST'])
def users():
    if request.method == 'GET':
        users = [
            {'id': 1, 'name': 'John'},
            {'id': 2, 'name': 'Jane'}
        ]
        return jsonify(users)
    user = request.json
    created.append(user)
    return jsonify(user), 201


if __name__ == '__main__':
    app.run(host='127.0.0.1', port=int(sys.argv[1]))
